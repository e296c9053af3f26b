//! The test fixtures kept beside this crate (`crates/wirehub-testkit/fixtures/`): a test CA
//! with two server certificates and their keys (`tls-*.pem`), and RSA and EC key pairs for
//! signed tokens (`rsa-*.pem`, `es256-*.pem`). Every crate's tests find them here.

use std::path::PathBuf;

/// The path of the fixture `name`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures")).join(name)
}

/// The bytes of the fixture `name`.
///
/// # Panics
/// When there is no such fixture.
pub fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}
