//! One module per page.

pub mod compare;
pub mod learn;
pub mod models;
pub mod playground;
pub mod train;
