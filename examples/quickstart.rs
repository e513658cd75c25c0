//! Placeholder, replaced by the full quickstart.
fn main() {}
