//! `nomad-double`: runs the Nomad agent double standalone, for trying Switchyard's Nomad
//! registry where no Nomad can be installed.
//!
//! ```text
//! nomad-double 127.0.0.1:4646
//! curl -X PUT localhost:4646/v1/jobs -d '{"Job":{"ID":"web","TaskGroups":[{"Name":"web",
//!   "Networks":[{"ReservedPorts":[{"Label":"http","Value":9001}]}],
//!   "Services":[{"Name":"web","PortLabel":"http","Provider":"nomad"}]}]}}'
//! ```

use switchyard_double_listener::{listen_arg, park_forever};
use switchyard_nomad_double::{NomadDouble, Options};

fn main() -> std::io::Result<()> {
    let listen = listen_arg("127.0.0.1:4646")?;
    let double = NomadDouble::start(Options {
        listen,
        ..Options::default()
    })?;
    eprintln!("nomad double listening on {}", double.address());
    park_forever()
}
