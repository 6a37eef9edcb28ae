//! The file registry against a real file on disk: changes are seen, a broken file keeps
//! the last good set (an error is reported), a fix is picked up again.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_file::FileFactory;
use switchyard_registry::{
    recover, Backoff, RegistryContext, RegistryFactory, ServiceQuery, SourceEvent, Update,
};

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        slow_retry: Duration::from_millis(100),
    }
}

async fn next(events: &mut (impl futures::Stream<Item = SourceEvent> + Unpin)) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
}

#[tokio::test]
async fn follows_changes_and_survives_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.json");
    std::fs::write(
        &path,
        r#"[{"targets":["127.0.0.1:1"],"labels":{"__service__":"echo"}}]"#,
    )
    .unwrap();
    let settings = serde_json::json!({"path": path.to_str().unwrap(), "poll": "200ms"});
    let Ok(registry) = FileFactory.build(RegistryContext::new("files"), &settings) else {
        panic!("builds")
    };
    let mut events = recover(registry.clone(), ServiceQuery::new("echo"), backoff());

    let SourceEvent::Update(Update::Reset(eps)) = next(&mut events).await else {
        panic!("reset first")
    };
    assert_eq!(eps.len(), 1);

    let changed = Instant::now();
    std::fs::write(
        &path,
        r#"[{"targets":["127.0.0.1:1","127.0.0.1:2"],"labels":{"__service__":"echo"}}]"#,
    )
    .unwrap();
    let SourceEvent::Update(Update::Reset(eps)) = next(&mut events).await else {
        panic!("reset on change")
    };
    println!("change seen after {:?}", changed.elapsed());
    assert_eq!(eps.len(), 2);

    std::fs::write(&path, "[{ not json").unwrap();
    assert!(
        matches!(next(&mut events).await, SourceEvent::Error(_)),
        "a broken file is an error, not an empty set"
    );

    // Replaced by rename, as editors and config tools do.
    let tmp = dir.path().join("services.json.tmp");
    std::fs::write(
        &tmp,
        r#"[{"targets":["127.0.0.1:3"],"labels":{"__service__":"echo"}}]"#,
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    loop {
        match next(&mut events).await {
            SourceEvent::Error(_) => continue,
            SourceEvent::Update(Update::Reset(eps)) => {
                assert_eq!(
                    eps.iter().map(|e| e.address.port()).collect::<Vec<_>>(),
                    vec![3]
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    std::fs::write(
        &path,
        r#"[{"targets":["127.0.0.1:3"],"labels":{"__service__":"other"}}]"#,
    )
    .unwrap();
    assert!(matches!(
        next(&mut events).await,
        SourceEvent::Update(Update::DoesNotExist)
    ));
    drop(dir);
}
