//! Hostile and mistaken input against a real cluster: each gets a clear error and changes
//! nothing. Requests go out as raw frames, past the client library's own checks.

use scopekeeper_client::limits::{REQUEST_BYTES_MAX, ZNODE_DATA_BYTES_MAX};
use scopekeeper_client::proto::{ApiError, Request, Response};
use scopekeeper_client::{CreateMode, ErrorCode, Op};
use scopekeeper_tests::{CLUSTER, Cluster, serial};
use scopekeeper_transport::frame::expect_frame;
use scopekeeper_transport::limits::CLIENT_FRAME_BYTES_MAX;
use scopekeeper_transport::{Alpn, Connection, Credentials, Endpoint, EndpointKeys};

/// A connection proving `creds`, past the client library's own checks.
async fn dial(
    creds: &Credentials,
    addr: std::net::SocketAddr,
    name: &str,
    alpn: Alpn,
) -> anyhow::Result<Connection> {
    let endpoint = Endpoint::bind(
        "127.0.0.1:0".parse()?,
        creds,
        &EndpointKeys::generate(),
        CLUSTER,
        false,
    )?;
    Ok(endpoint.connect(addr, name, alpn).await?)
}

async fn raw_connection(cluster: &Cluster, node: u64) -> anyhow::Result<Connection> {
    let config = cluster.client_config(&[node]);
    let creds = Credentials::load(&config.cert, &config.key, &config.ca)?;
    dial(&creds, config.endpoints[0].parse()?, CLUSTER, Alpn::Client).await
}

async fn send(conn: &Connection, request: &Request) -> anyhow::Result<Response> {
    Ok(conn
        .call::<Request, Response>(request, CLIENT_FRAME_BYTES_MAX)
        .await?)
}

fn code(r: Response) -> ErrorCode {
    match r {
        Ok(reply) => panic!("expected an error, got {reply:?}"),
        Err(ApiError {
            code: ErrorCode::ConnectionLoss,
            message,
        }) => panic!("connection loss: {message}"),
        Err(ApiError { code, .. }) => code,
    }
}

fn create(path: &str, data: Vec<u8>) -> Request {
    Request::Write {
        op: Op::Create {
            path: path.into(),
            data,
            mode: CreateMode::Persistent,
            acl: Vec::new(),
        },
        after_zxid: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster
        .settle(&[1, 2, 3], std::time::Duration::from_secs(30))
        .await?;
    let client = cluster.client().await?;
    client.create("/keep", b"v", CreateMode::Persistent).await?;
    let before = client.children("/").await?;

    let conn = raw_connection(&cluster, 2).await?;
    for bad in [
        "", "no-slash", "/a/", "//", "/a//b", "/a/./b", "/a/../b", "/nul\0", "/\u{1}",
    ] {
        assert_eq!(
            code(send(&conn, &create(bad, vec![])).await?),
            ErrorCode::BadArguments,
            "{bad:?}"
        );
        assert_eq!(
            code(send(&conn, &Request::GetData { path: bad.into() }).await?),
            ErrorCode::BadArguments,
            "{bad:?}"
        );
    }
    assert_eq!(
        code(send(&conn, &create("/missing/child", vec![])).await?),
        ErrorCode::NoNode
    );
    assert_eq!(
        code(send(&conn, &create("/keep", vec![])).await?),
        ErrorCode::NodeExists
    );

    // Just over a znode's limit: refused by the tree with its reason.
    let over = send(&conn, &create("/big", vec![7; ZNODE_DATA_BYTES_MAX + 1])).await?;
    let err = over.expect_err("over 1 MiB");
    assert_eq!(err.code, ErrorCode::BadArguments);
    assert!(err.message.contains("exceeds the limit"), "{}", err.message);
    // Far over: refused from the frame header, before the body is read.
    let huge = send(&conn, &create("/huge", vec![7; REQUEST_BYTES_MAX * 2])).await;
    match huge {
        Ok(Err(e)) => assert!(e.message.contains("exceeds the limit"), "{}", e.message),
        Ok(Ok(reply)) => panic!("a 2 MiB request was accepted: {reply:?}"),
        Err(e) => assert!(e.to_string().contains("stream"), "{e}"),
    }

    // Garbage where a request belongs.
    let (mut tx, mut rx) = conn.open_stream().await?;
    tx.write_all(&5u32.to_be_bytes()).await?;
    tx.write_all(&[0xde, 0xad, 0xbe, 0xef, 0xff]).await?;
    tx.finish()?;
    let reply: Response = expect_frame(&mut rx, CLIENT_FRAME_BYTES_MAX).await?;
    assert_eq!(code(reply), ErrorCode::MarshallingError);
    // A frame announcing 4 GiB.
    let (mut tx, mut rx) = conn.open_stream().await?;
    tx.write_all(&u32::MAX.to_be_bytes()).await?;
    tx.finish()?;
    let reply: Response = expect_frame(&mut rx, CLIENT_FRAME_BYTES_MAX).await?;
    assert_eq!(code(reply), ErrorCode::MarshallingError);
    // A frame that ends early.
    let (mut tx, mut rx) = conn.open_stream().await?;
    tx.write_all(&100u32.to_be_bytes()).await?;
    tx.write_all(&[1, 2, 3]).await?;
    tx.finish()?;
    let reply: Response = expect_frame(&mut rx, CLIENT_FRAME_BYTES_MAX).await?;
    assert_eq!(code(reply), ErrorCode::MarshallingError);
    // A well-formed write with a stray byte after it, in one write so both arrive together:
    // a stream carries one request, so the write is refused, not applied.
    let body = postcard::to_stdvec(&create("/trailing", b"x".to_vec()))?;
    let mut bytes = u32::try_from(body.len())?.to_be_bytes().to_vec();
    bytes.extend(body);
    bytes.push(0);
    let (mut tx, mut rx) = conn.open_stream().await?;
    tx.write_all(&bytes).await?;
    tx.finish()?;
    let reply: Response = expect_frame(&mut rx, CLIENT_FRAME_BYTES_MAX).await?;
    let err = reply.expect_err("trailing bytes");
    assert_eq!(err.code, ErrorCode::MarshallingError);
    assert!(
        err.message.contains("after the stream's last frame"),
        "{}",
        err.message
    );

    // The same connection still works, and nothing changed.
    let ok = send(
        &conn,
        &Request::GetData {
            path: "/keep".into(),
        },
    )
    .await?;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(client.children("/").await?, before);
    assert_eq!(client.exists("/big").await?, None);
    assert_eq!(client.exists("/trailing").await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_with_an_unknown_id_cannot_speak_raft() -> anyhow::Result<()> {
    use scopekeeper::peer::{PeerRequest, PeerResponse};
    use scopekeeper_transport::certs;
    use scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX;

    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster
        .settle(&[1, 2, 3], std::time::Duration::from_secs(30))
        .await?;
    // Issued by the real CA, so TLS accepts it; but node 9 is no member.
    let certs_dir = cluster.dir.path().join("certs");
    let ca = scopekeeper_transport::CertFiles::in_dir(&certs_dir, "ca").read()?;
    let rogue = certs::issue_node(&ca, 9, CLUSTER)?;
    let creds = Credentials::from_pem(&rogue.cert_pem, &rogue.key_pem, &ca.cert_pem)?;
    let addr = format!("127.0.0.1:{}", cluster.ports[0]).parse()?;
    let conn = dial(&creds, addr, "node-1.itest", Alpn::Peer).await?;
    let answer: PeerResponse = conn
        .call(&PeerRequest::Status { from: 9 }, PEER_FRAME_BYTES_MAX)
        .await?;
    match answer {
        PeerResponse::Invalid(why) => assert!(why.contains("node 9"), "{why}"),
        other => panic!("an unknown node was answered: {other:?}"),
    }
    // The cluster is undisturbed.
    cluster
        .client()
        .await?
        .create("/still-fine", b"", CreateMode::Persistent)
        .await?;
    Ok(())
}
