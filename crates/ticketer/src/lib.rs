//! How the services are put together: one process with everything
//! (`ticketer dev`), or one service per process (`ticketer serve`).

pub mod bench;
pub mod chaos;
pub mod dlq;
pub mod stack;
