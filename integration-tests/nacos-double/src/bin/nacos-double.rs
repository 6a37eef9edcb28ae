//! `nacos-double`: runs the Nacos server double standalone.
//!
//! ```text
//! nacos-double 127.0.0.1:8848
//! curl -X POST 'localhost:8848/nacos/v2/ns/instance?serviceName=orders&ip=127.0.0.1&port=9001'
//! ```

use switchyard_nacos_double::{NacosDouble, Options};

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8848".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen address: {e}"),
            )
        })?;
    let double = NacosDouble::start(Options {
        listen,
        ..Options::default()
    })?;
    eprintln!("nacos double listening on {}", double.address());
    loop {
        std::thread::park();
    }
}
