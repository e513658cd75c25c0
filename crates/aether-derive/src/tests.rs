//! The expansion on `syn` input: names, the generated impl, and every refusal.

use syn::{parse_quote, DeriveInput};

use super::{expand, parse, Shape};

fn names(input: DeriveInput) -> Vec<String> {
    match parse(&input) {
        Ok(events) => events.variants.into_iter().map(|v| v.name).collect(),
        Err(e) => panic!("{e}"),
    }
}

/// The message of the (first) error `expand` gives.
fn error(input: DeriveInput) -> String {
    match expand(input) {
        Ok(tokens) => panic!("expected an error, got {tokens}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn plain_renamed_and_rename_all_names() {
    let input: DeriveInput = parse_quote! {
        #[derive(Serialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case", bound = "T: Clone")]
        enum E<T> {
            MoneyIn { amount: i64 },
            #[serde(rename = "Opened!")]
            AccountOpened(T),
            #[serde(rename(deserialize = "ignored", serialize = "closed_for_good"), alias = "x")]
            Closed,
            #[serde(rename(deserialize = "only_in"))]
            Frozen,
            r#Type,
            #[serde(skip_deserializing, with = "a::b")]
            Old { x: u8 },
        }
    };
    assert_eq!(
        names(input),
        [
            "money-in",
            "Opened!",
            "closed_for_good",
            "frozen",
            "type",
            "old"
        ]
    );
    let plain: DeriveInput = parse_quote!(
        enum E {
            MoneyIn,
            X(u8),
        }
    );
    assert_eq!(names(plain), ["MoneyIn", "X"]);
    let serialize_half: DeriveInput = parse_quote! {
        #[serde(rename_all(deserialize = "lowercase", serialize = "SCREAMING_SNAKE_CASE"))]
        enum E { MoneyIn }
    };
    assert_eq!(names(serialize_half), ["MONEY_IN"]);
    let deserialize_half: DeriveInput = parse_quote! {
        #[serde(rename_all(deserialize = "lowercase"))]
        enum E { MoneyIn }
    };
    assert_eq!(names(deserialize_half), ["MoneyIn"]);
}

#[test]
fn the_impl_matches_every_shape_and_sets_the_schema_version() {
    let input: DeriveInput = parse_quote! {
        #[domain_event(schema_version = 3)]
        enum E<T: Clone> where T: Send {
            A,
            B(T),
            C { x: u8 },
        }
    };
    let events = match parse(&input) {
        Ok(events) => events,
        Err(e) => panic!("{e}"),
    };
    let shapes: Vec<Shape> = events.variants.iter().map(|v| v.shape).collect();
    assert_eq!(shapes, [Shape::Unit, Shape::Tuple, Shape::Named]);
    assert_eq!(events.schema_version, Some(3));
    let code = match expand(input) {
        Ok(tokens) => tokens.to_string(),
        Err(e) => panic!("{e}"),
    };
    for part in [
        "impl < T : Clone > :: aether_actor :: DomainEvent for E < T > where T : Send",
        "Self :: A => \"A\"",
        "Self :: B (..) => \"B\"",
        "Self :: C { .. } => \"C\"",
        "fn schema_version (& self) -> u32 { 3u32 }",
    ] {
        assert!(code.contains(part), "{part:?} not in {code}");
    }
    // No attribute: the trait's default schema version.
    let code = match expand(parse_quote!(
        enum E {
            A,
        }
    )) {
        Ok(tokens) => tokens.to_string(),
        Err(e) => panic!("{e}"),
    };
    assert!(!code.contains("schema_version"), "{code}");
    // An empty enum still expands (a match with no arms).
    assert!(expand(parse_quote!(
        enum E {}
    ))
    .is_ok());
}

#[test]
fn structs_and_unions_are_refused() {
    let e = error(parse_quote!(
        struct S {
            a: u8,
        }
    ));
    assert!(e.contains("needs an enum") && e.contains("struct"), "{e}");
    let e = error(parse_quote!(
        union U {
            a: u8,
        }
    ));
    assert!(e.contains("needs an enum") && e.contains("union"), "{e}");
}

#[test]
fn other_representations_are_refused() {
    let inputs: [DeriveInput; 4] = [
        parse_quote!(
            #[serde(tag = "type")]
            enum E {
                A,
            }
        ),
        parse_quote!(
            #[serde(tag = "t", content = "c")]
            enum E {
                A,
            }
        ),
        parse_quote!(
            #[serde(untagged)]
            enum E {
                A,
            }
        ),
        parse_quote!(
            #[serde(rename_all = "camelCase")]
            #[serde(content = "c")]
            enum E {
                A,
            }
        ),
    ];
    for input in inputs {
        let e = error(input);
        assert!(e.contains("externally tagged"), "{e}");
    }
}

#[test]
fn skipped_and_untagged_variants_are_refused() {
    for input in [
        parse_quote!(
            enum E {
                A,
                #[serde(skip)]
                B,
            }
        ),
        parse_quote!(
            enum E {
                #[serde(rename = "x", skip_serializing)]
                A,
            }
        ),
    ] {
        let e = error(input);
        assert!(e.contains("cannot skip a variant"), "{e}");
    }
    let e = error(parse_quote!(
        enum E {
            A,
            #[serde(untagged)]
            B(u8),
        }
    ));
    assert!(e.contains("externally tagged"), "{e}");
}

#[test]
fn errors_of_several_variants_are_all_reported() {
    let input: DeriveInput = parse_quote! {
        enum E { #[serde(skip)] A, #[serde(untagged)] B(u8), C }
    };
    let err = match expand(input) {
        Ok(tokens) => panic!("{tokens}"),
        Err(e) => e,
    };
    assert_eq!(err.into_iter().count(), 2);
}

#[test]
fn clashing_names_and_bad_attributes_are_refused() {
    let e = error(parse_quote! {
        #[serde(rename_all = "lowercase")]
        enum E { MoneyIn, Moneyin }
    });
    assert!(e.contains("both stored as event type \"moneyin\""), "{e}");
    let e = error(parse_quote!(
        enum E {
            A,
            #[serde(rename = "A")]
            B,
        }
    ));
    assert!(e.contains("`A` and `B`"), "{e}");
    let e = error(parse_quote!(
        #[serde(rename_all = "Snake_Case")]
        enum E {
            A,
        }
    ));
    assert!(
        e.contains("unknown rename_all rule") && e.contains("snake_case"),
        "{e}"
    );
    let e = error(parse_quote!(
        #[domain_event(version = 2)]
        enum E {
            A,
        }
    ));
    assert!(e.contains("unknown domain_event attribute"), "{e}");
    let e = error(parse_quote!(
        #[domain_event(schema_version = 0)]
        enum E {
            A,
        }
    ));
    assert!(e.contains("start at 1"), "{e}");
    let e = error(parse_quote!(
        #[domain_event(schema_version = "2")]
        enum E {
            A,
        }
    ));
    assert!(e.contains("expected integer literal"), "{e}");
    let e = error(parse_quote!(
        #[domain_event(schema_version = 99999999999)]
        enum E {
            A,
        }
    ));
    assert!(e.contains("number too large"), "{e}");
    let e = error(parse_quote! {
        #[domain_event(schema_version = 2)]
        #[domain_event(schema_version = 3)]
        enum E { A }
    });
    assert!(e.contains("more than once"), "{e}");
    let e = error(parse_quote!(
        enum E {
            #[domain_event(schema_version = 2)]
            A,
        }
    ));
    assert!(e.contains("goes on the enum"), "{e}");
}
