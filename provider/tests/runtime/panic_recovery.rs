//! A panic inside a KMS handler, over a real Unix socket: the call fails
//! with `Internal`, the panic is counted, and the same connection keeps
//! serving. The panic comes from the scripted Transit (a path that exists
//! only in tests), below the real service, engine and single-flight.

use bao_kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use bao_kms_proto::v2::key_management_service_server::KeyManagementServiceServer;
use bao_kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use bao_kms_provider::service::KmsService;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::support::{Node, ScriptedTransit};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_panicking_decrypt_fails_with_internal_is_counted_and_the_socket_keeps_serving() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(KmsService::new(engine.clone())))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let path = socket.clone();
    let channel = Endpoint::from_static("http://kms.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    let mut client = KeyManagementServiceClient::new(channel);

    let seed = vec![7u8; 32];
    let encrypted = client
        .encrypt(EncryptRequest {
            plaintext: seed.clone(),
            uid: "uid-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let decrypt = DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "uid-2".into(),
        key_id: encrypted.key_id.clone(),
        annotations: encrypted.annotations.clone(),
    };

    transit.panic_on_decrypt(true);
    let failed = client.decrypt(decrypt.clone()).await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    assert_eq!(failed.message(), "panic: kms request failed");
    let text = engine.metrics().encode();
    assert_eq!(
        sample(&text, r#"openbao_kms_panic_recoveries_total{method="decrypt"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"openbao_kms_panic_recoveries_total{method="encrypt"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"openbao_kms_grpc_requests_total{method="decrypt",status="internal"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"openbao_kms_grpc_in_flight{method="decrypt"}"#),
        Some(0.0),
        "the panicked call left the in-flight gauge"
    );

    // The same connection, the same ciphertext (the single-flight entry of
    // the panicked call is taken over), and the other methods still work.
    transit.panic_on_decrypt(false);
    let plaintext = client.decrypt(decrypt).await.unwrap().into_inner().plaintext;
    assert_eq!(plaintext, seed);
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.healthz, "ok");
    assert_eq!(status.key_id, encrypted.key_id);
    assert!(!server.is_finished());
    server.abort();
}
