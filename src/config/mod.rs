//! Configuration: YAML loading with `${VAR}` substitution, `$env`/`$file` secrets, validation
//! that reports every error at once with its key path, and the validated types.

pub mod model;
pub use model::*;
