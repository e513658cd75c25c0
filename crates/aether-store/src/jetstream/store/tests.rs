//! Unit tests of the store's pure helpers (which refusals doom an operation): kept out of the
//! store's files so the paths read without them.

use super::errors::dooms;

const OWN: Option<(&str, &str)> = Some(("S.events.QQ", "S.snapshots.QQ"));

#[test]
fn an_operation_is_doomed_only_by_subjects_it_uses() {
    // The actor's own data subjects, and API calls about them or about the whole stream.
    for subject in [
        "S.events.QQ",
        "S.snapshots.QQ",
        "$JS.API.STREAM.INFO.S",
        "$JS.API.STREAM.MSG.GET.S",
        "$JS.API.DIRECT.GET.S.S.events.QQ",
        "$JS.API.CONSUMER.CREATE.S.abc.S.events.QQ",
        "$JS.API.CONSUMER.MSG.NEXT.S.abc",
    ] {
        assert!(dooms(subject, "S", OWN, true), "{subject}");
    }
    // Another actor, another stream, a best-effort delete, an inbox.
    for subject in [
        "S.events.RR",
        "$JS.API.DIRECT.GET.S.S.events.RR",
        "$JS.API.CONSUMER.CREATE.S.abc.S.snapshots.RR",
        "$JS.API.STREAM.INFO.T",
        "$JS.API.STREAM.INFO.SS",
        "$JS.API.CONSUMER.DELETE.S.abc",
        "_INBOX.x.y",
        "T.events.QQ",
    ] {
        assert!(!dooms(subject, "S", OWN, true), "{subject}");
    }
    // A read never publishes to the data subjects: a refused save does not doom it.
    assert!(!dooms("S.events.QQ", "S", OWN, false));
    assert!(dooms("$JS.API.DIRECT.GET.S.S.events.QQ", "S", OWN, false));
    // Opening the stream: any API subject naming it, no data subject.
    assert!(dooms("$JS.API.STREAM.CREATE.S", "S", None, false));
    assert!(dooms("$JS.API.DIRECT.GET.S.S.events.RR", "S", None, false));
    assert!(!dooms("S.events.QQ", "S", None, false));
}
