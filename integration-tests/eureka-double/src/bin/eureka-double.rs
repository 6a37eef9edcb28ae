//! `eureka-double`: runs the Eureka server double standalone.
//!
//! ```text
//! eureka-double 127.0.0.1:8761
//! curl -X POST localhost:8761/eureka/apps/ORDERS -H 'Content-Type: application/json' \
//!   -d '{"instance":{"instanceId":"o1","hostName":"localhost","app":"ORDERS","ipAddr":"127.0.0.1",
//!        "status":"UP","port":{"$":9001,"@enabled":"true"}}}'
//! ```

use switchyard_double_listener::{listen_arg, park_forever};
use switchyard_eureka_double::{EurekaDouble, Options};

fn main() -> std::io::Result<()> {
    let listen = listen_arg("127.0.0.1:8761")?;
    let double = EurekaDouble::start(Options {
        listen,
        ..Options::default()
    })?;
    eprintln!("eureka double listening on {}", double.address());
    park_forever()
}
