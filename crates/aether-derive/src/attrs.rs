//! Reading the attributes the derive depends on: serde's (`#[serde(...)]`) and its own
//! (`#[domain_event(...)]`).
//!
//! Only what changes the serialised variant name, or makes it something other than a tag, is
//! read; every other serde attribute is skipped unread, so serde stays the judge of its own
//! syntax.

use proc_macro2::TokenTree;
use syn::meta::ParseNestedMeta;
use syn::{parenthesized, token, Attribute, LitInt, LitStr, Token};

use crate::case::RenameRule;

/// What the enum's attributes say.
#[derive(Debug, Default)]
pub(crate) struct EnumAttrs {
    /// `#[serde(rename_all = "...")]`, or its `serialize` half.
    pub(crate) rename_all: Option<RenameRule>,
    /// `#[domain_event(schema_version = N)]`.
    pub(crate) schema_version: Option<u32>,
}

/// What a variant's attributes say.
#[derive(Debug, Default)]
pub(crate) struct VariantAttrs {
    /// `#[serde(rename = "...")]`, or its `serialize` half.
    pub(crate) rename: Option<String>,
}

/// Why an enum-level serde attribute cannot be used with the derive.
const NOT_EXTERNALLY_TAGGED: &str =
    "#[derive(DomainEvent)] needs serde's default, externally tagged enum representation \
     (an event is stored as its variant name and its fields): remove this attribute";

/// Reads the enum's `#[serde(...)]` and `#[domain_event(...)]` attributes.
pub(crate) fn enum_attrs(attrs: &[Attribute]) -> syn::Result<EnumAttrs> {
    let mut out = EnumAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("serde") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename_all") {
                    if let Some(name) = serialize_name(&meta)? {
                        out.rename_all =
                            Some(RenameRule::from_name(&name.value()).ok_or_else(|| {
                                syn::Error::new(
                                    name.span(),
                                    format!(
                                        "unknown rename_all rule {:?}; serde knows {}",
                                        name.value(),
                                        RenameRule::names()
                                    ),
                                )
                            })?);
                    }
                    Ok(())
                } else if ["tag", "content", "untagged"]
                    .iter()
                    .any(|name| meta.path.is_ident(name))
                {
                    Err(meta.error(NOT_EXTERNALLY_TAGGED))
                } else {
                    skip_value(&meta)
                }
            })?;
        } else if attr.path().is_ident("domain_event") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("schema_version") {
                    let lit: LitInt = meta.value()?.parse()?;
                    let version: u32 = lit.base10_parse()?;
                    if version == 0 {
                        return Err(syn::Error::new(
                            lit.span(),
                            "schema versions start at 1 (the version of an event stored \
                             without one)",
                        ));
                    }
                    if out.schema_version.replace(version).is_some() {
                        return Err(meta.error("schema_version is given more than once"));
                    }
                    Ok(())
                } else {
                    Err(meta.error(
                        "unknown domain_event attribute; the one supported is \
                         `schema_version = N`",
                    ))
                }
            })?;
        }
    }
    Ok(out)
}

/// Reads a variant's `#[serde(...)]` attributes, refusing those that keep it from being
/// written as a tag (`skip`, `skip_serializing`, `untagged`), and a misplaced
/// `#[domain_event]`.
pub(crate) fn variant_attrs(attrs: &[Attribute]) -> syn::Result<VariantAttrs> {
    let mut out = VariantAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("serde") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    if let Some(name) = serialize_name(&meta)? {
                        out.rename = Some(name.value());
                    }
                    Ok(())
                } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_serializing") {
                    Err(meta.error(
                        "#[derive(DomainEvent)] cannot skip a variant: every variant is an \
                         event type that must be stored; remove the variant or this attribute",
                    ))
                } else if meta.path.is_ident("untagged") {
                    Err(meta.error(
                        "#[derive(DomainEvent)] needs every variant externally tagged (stored \
                         under its name): remove this attribute",
                    ))
                } else {
                    skip_value(&meta)
                }
            })?;
        } else if attr.path().is_ident("domain_event") {
            return Err(syn::Error::new_spanned(
                attr,
                "#[domain_event(...)] goes on the enum, not on a variant",
            ));
        }
    }
    Ok(out)
}

/// The serialised name of `rename = "..."` / `rename_all = "..."`, or of the `serialize`
/// half of `rename(serialize = "...", deserialize = "...")`; `None` when only the
/// deserialising name is given.
fn serialize_name(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    if meta.input.peek(Token![=]) {
        return Ok(Some(meta.value()?.parse()?));
    }
    let mut serialize = None;
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("serialize") {
            serialize = Some(inner.value()?.parse()?);
            Ok(())
        } else {
            skip_value(&inner)
        }
    })?;
    Ok(serialize)
}

/// Skips the value of an attribute this derive does not read: nothing, `= value` or
/// `(...)`.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let value = meta.value()?;
        while !value.is_empty() && !value.peek(Token![,]) {
            value.parse::<TokenTree>()?;
        }
    } else if meta.input.peek(token::Paren) {
        let content;
        parenthesized!(content in meta.input);
        content.parse::<proc_macro2::TokenStream>()?;
    }
    Ok(())
}
