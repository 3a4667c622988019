//! End-to-end tests live in `tests/`; this crate only gives them a home in the workspace.
