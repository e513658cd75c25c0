//! Retry patterns for version conflicts (being written).
fn main() {}
