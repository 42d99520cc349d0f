//! Files a published crate's tests carry a copy of, because the packaged crate cannot
//! reach the rest of the repository: each copy must stay equal to its original.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
}

#[test]
fn fake_ws_servers_asyncapi_fixture_is_the_payments_link_contract() {
    for name in ["asyncapi.yaml", "protocol.schema.json"] {
        let original = root().join("docs").join(name);
        let copy = root()
            .join("fake-ws-server/tests/fixtures/asyncapi")
            .join(name);
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            read(&original) == read(&copy),
            "{} differs from {}: copy it again (cp {} {})",
            copy.display(),
            original.display(),
            original.display(),
            copy.display()
        );
    }
}
