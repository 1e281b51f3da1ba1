//! The `hyperat` binary's parts: the CLI subcommands and the HTTP server (`serve`),
//! both thin over the `hyperat` core library.

pub mod cli;
pub mod serve;
