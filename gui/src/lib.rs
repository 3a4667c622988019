//! Echoel Jam's editor views. They read snapshots and send commands; they never touch the
//! audio thread's state directly (see DESIGN.md, "Threads").
