//! `eureka-double`: runs the Eureka server double standalone.
//!
//! ```text
//! eureka-double 127.0.0.1:8761
//! curl -X POST localhost:8761/eureka/apps/ORDERS -H 'Content-Type: application/json' \
//!   -d '{"instance":{"instanceId":"o1","hostName":"localhost","app":"ORDERS","ipAddr":"127.0.0.1",
//!        "status":"UP","port":{"$":9001,"@enabled":"true"}}}'
//! ```

use switchyard_eureka_double::{EurekaDouble, Options};

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8761".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen address: {e}"),
            )
        })?;
    let double = EurekaDouble::start(Options {
        listen,
        ..Options::default()
    })?;
    eprintln!("eureka double listening on {}", double.address());
    loop {
        std::thread::park();
    }
}
