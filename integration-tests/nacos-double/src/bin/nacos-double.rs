//! `nacos-double`: runs the Nacos server double standalone.
//!
//! ```text
//! nacos-double 127.0.0.1:8848
//! curl -X POST 'localhost:8848/nacos/v2/ns/instance?serviceName=orders&ip=127.0.0.1&port=9001'
//! ```

use switchyard_double_listener::{listen_arg, park_forever};
use switchyard_nacos_double::{NacosDouble, Options};

fn main() -> std::io::Result<()> {
    let listen = listen_arg("127.0.0.1:8848")?;
    let double = NacosDouble::start(Options {
        listen,
        ..Options::default()
    })?;
    eprintln!("nacos double listening on {}", double.address());
    park_forever()
}
