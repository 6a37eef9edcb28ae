//! The double's listener (stop, resume, request counts): the one all the polled-registry
//! doubles share, in `switchyard-double-listener`.

pub use switchyard_double_listener::*;
