//! The conference example (work in progress).
