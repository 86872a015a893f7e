//! Scenario: only holders of a farm certificate get anything from the coordinator.
//! A smurf with a foreign certificate, a client with none, a node claiming another's name and a
//! peer sending garbage are all refused, while a genuine smurf is welcomed (so the refusals are
//! not a coordinator that refuses everyone).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailfarm_coordinator::{Coordinator, CoordinatorSettings};
use mailfarm_pki::wire::{write_frame, FrameReader};
use mailfarm_pki::{FarmFiles, Identity, COORDINATOR_NAME};
use mailfarm_protocol::{Hello, HelloReply, Role, PROTOCOL_VERSION};

struct Farm {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    handle: mailfarm_coordinator::CoordinatorHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_farm() -> Farm {
    let dir = tempfile::tempdir().unwrap();
    mailfarm_pki::init_farm(dir.path(), &["smurf-1".into()], &["operator".into()]).unwrap();
    let coordinator = Coordinator::bind(CoordinatorSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        Identity::load(&FarmFiles::in_dir(dir.path(), "coordinator")).unwrap(),
        vec![7; 32],
    ))
    .await
    .unwrap();
    let addr = coordinator.local_addr().unwrap();
    let handle = coordinator.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(coordinator.run(async {
        let _ = stopped.await;
    }));
    Farm {
        dir,
        addr,
        handle,
        _stop: stop,
    }
}

fn endpoint(config: quinn::ClientConfig) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

fn smurf_hello(node: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role: Role::Smurf {
            node: node.into(),
            window: 8,
            templates_held: vec![],
            held_results: 0,
            initial_role: None,
            software: "test".into(),
        },
    }
}

/// Connects, says `hello`, and returns the coordinator's reply, or an error string when the
/// link failed before any reply.
async fn try_hello(
    config: quinn::ClientConfig,
    addr: SocketAddr,
    hello: &Hello,
) -> Result<HelloReply, String> {
    let endpoint = endpoint(config);
    let attempt = async {
        let connection = endpoint
            .connect(addr, COORDINATOR_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("open: {e}"))?;
        write_frame(&mut send, hello)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reader = FrameReader::new(recv, 1 << 20);
        match reader.next::<HelloReply>().await {
            Ok(Some((reply, _))) => Ok(reply),
            Ok(None) => Err("stream closed".to_string()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A client that trusts the farm CA but presents no certificate.
fn without_certificate(trusting: &Identity) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusting.ca[0].clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![mailfarm_protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

fn identity(dir: &std::path::Path, stem: &str) -> Identity {
    Identity::load(&FarmFiles::in_dir(dir, stem)).unwrap()
}

#[tokio::test]
async fn genuine_smurf_is_welcomed() {
    let farm = start_farm().await;
    let config = mailfarm_pki::client_config(&identity(farm.dir.path(), "smurf-1")).unwrap();
    let reply = try_hello(config, farm.addr, &smurf_hello("smurf-1")).await;
    assert!(matches!(reply, Ok(HelloReply::Welcome { .. })), "{reply:?}");
}

#[tokio::test]
async fn smurf_with_a_foreign_certificate_gets_nothing() {
    let farm = start_farm().await;
    let foreign = tempfile::tempdir().unwrap();
    mailfarm_pki::init_farm(foreign.path(), &["smurf-1".into()], &[]).unwrap();
    // It trusts our coordinator (so the handshake proceeds) but its own cert is from another CA.
    let ours = identity(farm.dir.path(), "smurf-1");
    let theirs = identity(foreign.path(), "smurf-1");
    let mixed = Identity {
        ca: ours.ca,
        chain: theirs.chain,
        key: theirs.key,
    };
    let config = mailfarm_pki::client_config(&mixed).unwrap();
    let reply = try_hello(config, farm.addr, &smurf_hello("smurf-1")).await;
    assert!(reply.is_err(), "a foreign certificate got: {reply:?}");
    assert!(farm.handle.farm().smurfs().is_empty());
}

#[tokio::test]
async fn client_without_certificate_gets_nothing() {
    let farm = start_farm().await;
    let config = without_certificate(&identity(farm.dir.path(), "smurf-1"));
    let reply = try_hello(config, farm.addr, &smurf_hello("smurf-1")).await;
    assert!(
        reply.is_err(),
        "a client without certificate got: {reply:?}"
    );
    assert!(farm.handle.farm().smurfs().is_empty());
}

#[tokio::test]
async fn certificate_of_another_node_cannot_claim_a_smurf_name() {
    let farm = start_farm().await;
    // The operator's certificate is genuine but is not smurf-1's.
    let config = mailfarm_pki::client_config(&identity(farm.dir.path(), "operator")).unwrap();
    let reply = try_hello(config, farm.addr, &smurf_hello("smurf-1")).await;
    match reply {
        Ok(HelloReply::Refused { reason }) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And a smurf certificate cannot act as an operator.
    let config = mailfarm_pki::client_config(&identity(farm.dir.path(), "smurf-1")).unwrap();
    let operator_hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Operator {
            name: "operator".into(),
        },
    };
    let reply = try_hello(config, farm.addr, &operator_hello).await;
    assert!(matches!(reply, Ok(HelloReply::Refused { .. })), "{reply:?}");
    assert!(farm.handle.farm().smurfs().is_empty());
}

#[tokio::test]
async fn wrong_protocol_version_is_refused_clearly() {
    let farm = start_farm().await;
    let config = mailfarm_pki::client_config(&identity(farm.dir.path(), "smurf-1")).unwrap();
    let mut hello = smurf_hello("smurf-1");
    hello.version = PROTOCOL_VERSION + 1;
    match try_hello(config, farm.addr, &hello).await {
        Ok(HelloReply::Refused { reason }) => assert!(reason.contains("version"), "{reason}"),
        other => panic!("expected a version refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_on_the_stream_closes_only_that_link() {
    let farm = start_farm().await;
    let config = mailfarm_pki::client_config(&identity(farm.dir.path(), "smurf-1")).unwrap();
    let endpoint = endpoint(config.clone());
    let connection = endpoint
        .connect(farm.addr, COORDINATOR_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // A frame header announcing 4 GiB, then junk.
    send.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let outcome = tokio::time::timeout(Duration::from_secs(10), recv.read(&mut buf)).await;
    assert!(
        outcome.is_ok(),
        "the coordinator must answer or close, not hang"
    );
    // The coordinator still serves genuine smurfs.
    let reply = try_hello(config, farm.addr, &smurf_hello("smurf-1")).await;
    assert!(matches!(reply, Ok(HelloReply::Welcome { .. })), "{reply:?}");
}

#[tokio::test]
async fn operator_without_certificate_controls_nothing() {
    let farm = start_farm().await;
    let ours = identity(farm.dir.path(), "operator");
    let config = without_certificate(&ours);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Operator {
            name: "operator".into(),
        },
    };
    let reply = try_hello(config, farm.addr, &hello).await;
    assert!(
        reply.is_err(),
        "an operator without certificate got: {reply:?}"
    );
    // The same request with the operator certificate is welcomed, so the refusal was the
    // missing certificate.
    let config = mailfarm_pki::client_config(&ours).unwrap();
    let reply = try_hello(config, farm.addr, &hello).await;
    assert!(matches!(reply, Ok(HelloReply::Welcome { .. })), "{reply:?}");
}
