//! Derive macros for Aether. `#[derive(DomainEvent)]` implements
//! `aether_actor::DomainEvent` for a serde enum: `event_type()` returns each variant's serde
//! name, so the name stored with an event and the name `event_type()` gives cannot drift
//! apart when a variant is added or renamed.
//!
//! Use it through `aether_actor`, which re-exports it next to the trait
//! (`use aether_actor::DomainEvent;` brings both in, as `use serde::Serialize;` does); the
//! generated code names the trait `::aether_actor::DomainEvent`.
//!
//! # What it generates
//! - `fn event_type(&self) -> &'static str`: a match over the variants, giving each its serde
//!   name: the variant ident; or `#[serde(rename = "...")]` (or the `serialize` half of
//!   `rename(serialize = "...", deserialize = "...")`) on the variant; else the enum's
//!   `#[serde(rename_all = "...")]` rule applied to the ident, by serde's rules (`lowercase`,
//!   `UPPERCASE`, `PascalCase`, `camelCase`, `snake_case`, `SCREAMING_SNAKE_CASE`,
//!   `kebab-case`, `SCREAMING-KEBAB-CASE`).
//! - `fn schema_version(&self) -> u32`, only when the enum says
//!   `#[domain_event(schema_version = N)]` (N ≥ 1); otherwise the trait's default, 1.
//!
//! # What it refuses
//! A compile error, pointing at the offending item, for: a struct or a union; an enum with
//! `#[serde(tag = ...)]`, `content` or `untagged` (events are stored externally tagged); a
//! variant with `#[serde(skip)]`, `skip_serializing` or `untagged`; two variants with the same
//! serde name; an unknown `rename_all` rule; `#[domain_event(...)]` on a variant or with an
//! unknown key. Attributes inside `#[cfg_attr(...)]` are not seen: write the serde
//! attributes that name variants unconditionally.
//!
//! # Layout
//! - this file: the derive's entry point and `expand`, which builds the impl from the parsed
//!   enum (unit-tested on `syn` input, errors included);
//! - `attrs`: reading `#[serde(...)]` and `#[domain_event(...)]`;
//! - `case`: serde's `rename_all` rules for variants, copied from serde_derive.
//!
//! # Example
//! This crate cannot run the example itself (its doc tests would need `aether_actor`, which
//! depends on this crate); the same example runs as a doc test of the re-export,
//! `aether_actor::DomainEvent`.
//!
//! ```ignore
//! use aether_actor::DomainEvent;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! #[serde(rename_all = "snake_case")]
//! #[domain_event(schema_version = 2)]
//! enum AccountEvent {
//!     Opened { owner: String },
//!     #[serde(rename = "money_in")]
//!     Deposited { cents: i64 },
//!     Closed,
//! }
//!
//! assert_eq!(AccountEvent::Opened { owner: "ann".into() }.event_type(), "opened");
//! assert_eq!(AccountEvent::Deposited { cents: 5 }.event_type(), "money_in");
//! assert_eq!(AccountEvent::Closed.event_type(), "closed");
//! assert_eq!(AccountEvent::Closed.schema_version(), 2);
//! ```

use std::collections::HashMap;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::ext::IdentExt;
use syn::{parse_macro_input, Data, DeriveInput, Fields, Ident};

mod attrs;
mod case;

/// Derives `aether_actor::DomainEvent` for an externally tagged serde enum: `event_type()`
/// gives each variant's serde name (honouring `#[serde(rename)]` and `#[serde(rename_all)]`),
/// and `#[domain_event(schema_version = N)]` on the enum sets `schema_version()`.
///
/// See the crate documentation for what it refuses.
#[proc_macro_derive(DomainEvent, attributes(domain_event, serde))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The `DomainEvent` impl for `input`, or the errors to report (all of a variant list's at
/// once).
fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let events = parse(&input)?;
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let arms = events.variants.iter().map(|variant| {
        let ident = &variant.ident;
        let pattern = match variant.shape {
            Shape::Unit => quote!(Self::#ident),
            Shape::Tuple => quote!(Self::#ident(..)),
            Shape::Named => quote!(Self::#ident { .. }),
        };
        let name = &variant.name;
        quote!(#pattern => #name,)
    });
    let schema_version = events.schema_version.map(|version| {
        quote! {
            fn schema_version(&self) -> u32 {
                #version
            }
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::aether_actor::DomainEvent for #ident #ty_generics #where_clause {
            fn event_type(&self) -> &'static str {
                match *self {
                    #(#arms)*
                }
            }
            #schema_version
        }
    })
}

/// What the derive reads from an enum.
#[derive(Debug)]
struct Events {
    /// `#[domain_event(schema_version = N)]`.
    schema_version: Option<u32>,
    /// The variants, in declaration order.
    variants: Vec<EventVariant>,
}

/// One variant: one event type.
#[derive(Debug)]
struct EventVariant {
    ident: Ident,
    shape: Shape,
    /// The serde name: the stored event type.
    name: String,
}

/// How a variant's pattern is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unit,
    Tuple,
    Named,
}

/// Reads the enum `input`: its schema version and each variant's serde name.
///
/// # Errors
/// When `input` is not an enum, is not externally tagged, or a variant cannot be stored (see
/// the crate documentation); the errors of all variants are combined.
fn parse(input: &DeriveInput) -> syn::Result<Events> {
    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(_) => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(DomainEvent)] needs an enum, one variant per event type; this is a \
                 struct",
            ))
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(DomainEvent)] needs an enum, one variant per event type; this is a \
                 union",
            ))
        }
    };
    let enum_attrs = attrs::enum_attrs(&input.attrs)?;
    let mut variants = Vec::with_capacity(data.variants.len());
    let mut seen: HashMap<String, Ident> = HashMap::new();
    let mut errors: Option<syn::Error> = None;
    let mut fail = |error: syn::Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    for variant in &data.variants {
        let variant_attrs = match attrs::variant_attrs(&variant.attrs) {
            Ok(attrs) => attrs,
            Err(error) => {
                fail(error);
                continue;
            }
        };
        let rust_name = variant.ident.unraw().to_string();
        let name = match (variant_attrs.rename, enum_attrs.rename_all) {
            (Some(name), _) => name,
            (None, Some(rule)) => rule.apply_to_variant(&rust_name),
            (None, None) => rust_name,
        };
        if let Some(first) = seen.get(&name) {
            fail(syn::Error::new(
                variant.ident.span(),
                format!(
                    "variants `{first}` and `{}` are both stored as event type {name:?}; give \
                     one another name with #[serde(rename = \"...\")]",
                    variant.ident
                ),
            ));
            continue;
        }
        seen.insert(name.clone(), variant.ident.clone());
        let shape = match variant.fields {
            Fields::Unit => Shape::Unit,
            Fields::Unnamed(_) => Shape::Tuple,
            Fields::Named(_) => Shape::Named,
        };
        variants.push(EventVariant {
            ident: variant.ident.clone(),
            shape,
            name,
        });
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(Events {
            schema_version: enum_attrs.schema_version,
            variants,
        }),
    }
}

#[cfg(test)]
mod tests;
