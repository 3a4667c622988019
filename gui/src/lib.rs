//! Echoel Jam's editor views. They read snapshots and send commands; they never touch the
//! audio thread's state directly (see DESIGN.md, "Threads").

pub mod model;
mod routing;
pub mod view;

pub use egui;
pub use model::{Command, LinkStatus, Snapshot};
pub use view::{draw, EditorState, DEFAULT_SIZE};
