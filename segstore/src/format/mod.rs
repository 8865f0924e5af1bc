//! On-object formats, kept apart from the policy that uses them.
pub mod index;
pub mod segment;
