//! Cluster layer (placement, membership, routing); filled in by the cluster work.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
