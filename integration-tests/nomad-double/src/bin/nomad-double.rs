//! `nomad-double`: runs the Nomad agent double standalone, for trying Switchyard's Nomad
//! registry where no Nomad can be installed.
//!
//! ```text
//! nomad-double 127.0.0.1:4646
//! curl -X PUT localhost:4646/v1/jobs -d '{"Job":{"ID":"web","TaskGroups":[{"Name":"web",
//!   "Networks":[{"ReservedPorts":[{"Label":"http","Value":9001}]}],
//!   "Services":[{"Name":"web","PortLabel":"http","Provider":"nomad"}]}]}}'
//! ```

use switchyard_nomad_double::{NomadDouble, Options};

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4646".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen address: {e}"),
            )
        })?;
    let double = NomadDouble::start(Options {
        listen,
        ..Options::default()
    })?;
    eprintln!("nomad double listening on {}", double.address());
    loop {
        std::thread::park();
    }
}
