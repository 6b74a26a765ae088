//! The resilient uploader against a real HTTP listener on loopback: a server that comes
//! up late, one that answers 429 with `Retry-After`, one that refuses, the spool bound
//! and the spool surviving a restart.

use crate::common::{eventually, free_addr};
use hotframe::model::pprof::{self, DecodeOptions};
use hotframe::model::{Profile, ProfileBuilder, ThreadState};
use hotframe::upload::{Envelope, UploadOptions, Uploader};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the test server received.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn label(&self, key: &str) -> Option<String> {
        let wanted = format!("label.{key}=");
        self.query.split('&').find_map(|kv| kv.strip_prefix(&wanted).map(str::to_string))
    }
}

/// A minimal HTTP/1.1 server on a std listener: records every request and answers with
/// whatever `respond(request_index)` says.
struct TestServer {
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

type Responder = dyn Fn(usize) -> (u16, Vec<(&'static str, String)>) + Send + Sync;

impl TestServer {
    fn start(listener: TcpListener, respond: Box<Responder>) -> TestServer {
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, stop2) = (Arc::clone(&received), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => handle_connection(stream, &rec, &*respond),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestServer { received, stop, handle: Some(handle) }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle_connection(stream: TcpStream, received: &Mutex<Vec<Received>>, respond: &Responder) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    let query = target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap();
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let index = {
        let mut all = received.lock().unwrap();
        all.push(Received { at: Instant::now(), query, headers, body });
        all.len() - 1
    };
    let (status, extra) = respond(index);
    let payload =
        if status < 300 { r#"{"profileId":1,"samples":1}"# } else { r#"{"error":"test says no","reason":"test"}"# };
    let mut answer = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", payload.len());
    for (k, v) in extra {
        answer.push_str(&format!("{k}: {v}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(payload);
    let mut stream = stream;
    let _ = stream.write_all(answer.as_bytes());
}

fn profile(seq: usize) -> Profile {
    let start = 1_700_000_000_000 + seq as i64 * 10_000;
    let mut b =
        ProfileBuilder::new("upload-test", start, start + 10_000, 10_101_010).label("seq", &format!("{seq:03}"));
    b.add(&["main", "handle", "parse_json"], ThreadState::Runnable, 7 + seq as u64);
    b.add(&["main", "idle"], ThreadState::Waiting, 3);
    b.finish()
}

/// Short timings so a test takes seconds, not minutes.
fn fast_options(addr: SocketAddr) -> UploadOptions {
    let mut opts = UploadOptions::new(&format!("http://{addr}"));
    opts.backoff_base = Duration::from_millis(20);
    opts.backoff_cap = Duration::from_millis(200);
    opts.retries_per_cycle = 2;
    opts.connect_timeout = Duration::from_millis(500);
    opts.request_timeout = Duration::from_secs(5);
    opts
}

fn ok() -> Box<Responder> {
    Box::new(|_| (200, Vec::new()))
}

/// The seq labels of the received profiles, checking each body decodes to the profile
/// that was sent.
fn received_seqs(server: &TestServer) -> Vec<usize> {
    let mut seqs: Vec<usize> = server
        .received()
        .iter()
        .map(|r| {
            let seq: usize = r.label("seq").expect("seq label").parse().unwrap();
            let opts = DecodeOptions {
                service: "upload-test".into(),
                start_ms: 0,
                end_ms: 1,
                sample_type: None,
                max_bytes: 1 << 20,
            };
            let decoded = pprof::decode(&r.body, &opts).expect("pprof body");
            assert_eq!(decoded.total_samples(), profile(seq).total_samples(), "body of seq {seq}");
            assert!(r.query.contains("service=upload-test"), "{}", r.query);
            seq
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

#[test]
fn server_down_at_start_then_up_gets_every_profile_exactly_once() {
    let spool = crate::common::tempdir();
    let addr = free_addr();
    let mut opts = fast_options(addr);
    opts.spool_dir = Some(spool.path().to_path_buf());
    opts.token = Some("s3cret".into());
    let uploader = Uploader::start(opts).unwrap();
    // Part of the workload, not a wait: profiles come one by one over 0.6 s, as an
    // agent's would, while the uploader is failing.
    for seq in 0..12 {
        uploader.submit(profile(seq));
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually("profiles to go to the spool while the server is down", Duration::from_secs(5), || {
        uploader.stats().spooled > 0
    });
    let server = TestServer::start(TcpListener::bind(addr).unwrap(), ok());
    for seq in 12..20 {
        uploader.submit(profile(seq));
    }
    assert!(uploader.flush(Duration::from_secs(20)), "flush delivers everything: {:?}", uploader.stats());
    assert_eq!(received_seqs(&server), (0..20).collect::<Vec<_>>());
    let stats = uploader.stats();
    assert_eq!((stats.sent, stats.dropped, stats.rejected, stats.queued, stats.spooled), (20, 0, 0, 0, 0), "{stats:?}");
    assert!(stats.failed > 0 && stats.bytes_sent > 0, "{stats:?}");
    let first = &server.received()[0];
    assert!(first.headers.iter().any(|(k, v)| k == "authorization" && v == "Bearer s3cret"));
    assert!(first.headers.iter().any(|(k, v)| k == "content-encoding" && v == "gzip"));
}

#[test]
fn the_spool_survives_a_restart_of_the_uploader() {
    let spool = crate::common::tempdir();
    let addr = free_addr();
    let mut opts = fast_options(addr);
    opts.spool_dir = Some(spool.path().to_path_buf());
    {
        let uploader = Uploader::start(opts.clone()).unwrap();
        for seq in 0..5 {
            uploader.submit(profile(seq));
        }
        assert!(!uploader.flush(Duration::from_millis(1500)), "nothing can be delivered while down");
    }
    let files = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".hfspool"));
    assert_eq!(files.count(), 5, "every profile is on disk after the first uploader stops");
    let server = TestServer::start(TcpListener::bind(addr).unwrap(), ok());
    let uploader = Uploader::start(opts).unwrap();
    assert_eq!(uploader.stats().spooled, 5);
    uploader.submit(profile(5));
    assert!(uploader.flush(Duration::from_secs(20)), "{:?}", uploader.stats());
    assert_eq!(received_seqs(&server), (0..6).collect::<Vec<_>>());
    // Oldest first: the spooled profiles went before the new one.
    let order: Vec<String> = server.received().iter().map(|r| r.label("seq").unwrap()).collect();
    assert_eq!(order.last().map(String::as_str), Some("005"));
}

#[test]
fn a_429_with_retry_after_makes_the_uploader_wait_then_deliver() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TestServer::start(
        listener,
        Box::new(|i| if i < 2 { (429, vec![("Retry-After", "1".to_string())]) } else { (200, Vec::new()) }),
    );
    let mut opts = fast_options(addr);
    opts.retries_per_cycle = 3;
    let uploader = Uploader::start(opts).unwrap();
    uploader.submit(profile(1));
    assert!(uploader.flush(Duration::from_secs(15)), "{:?}", uploader.stats());
    let got = server.received();
    assert_eq!(got.len(), 3, "two refusals then one success");
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // Without Retry-After the backoff here is at most 200 ms.
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}, before Retry-After: 1");
    }
    let stats = uploader.stats();
    assert_eq!((stats.sent, stats.failed, stats.retries), (1, 2, 2), "{stats:?}");
}

#[test]
fn a_refused_profile_is_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TestServer::start(listener, Box::new(|i| if i == 0 { (400, Vec::new()) } else { (200, Vec::new()) }));
    let uploader = Uploader::start(fast_options(addr)).unwrap();
    uploader.submit(profile(0));
    uploader.submit(profile(1));
    assert!(uploader.flush(Duration::from_secs(10)));
    assert_eq!(server.received().len(), 2, "one request per profile");
    let stats = uploader.stats();
    assert_eq!((stats.sent, stats.rejected, stats.retries), (1, 1, 0), "{stats:?}");
}

#[test]
fn the_spool_bound_drops_the_oldest_and_counts_them() {
    let spool = crate::common::tempdir();
    let addr = free_addr();
    let one = Envelope::from_profile(&profile(0));
    let file_size = (serde_json::to_vec(&one.meta).unwrap().len() + 1 + one.body.len()) as u64;
    let mut opts = fast_options(addr);
    opts.spool_dir = Some(spool.path().to_path_buf());
    opts.spool_max_bytes = file_size * 3 + file_size / 2;
    let uploader = Uploader::start(opts).unwrap();
    for seq in 0..10 {
        uploader.submit(profile(seq));
    }
    eventually("every profile spooled or dropped", Duration::from_secs(10), || {
        let s = uploader.stats();
        if s.queued == 0 && s.spooled + s.dropped == 10 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let stats = uploader.stats();
    assert!(stats.spool_bytes <= file_size * 3 + file_size / 2, "{stats:?}");
    assert_eq!((stats.spooled, stats.dropped), (3, 7), "{stats:?}");
    let server = TestServer::start(TcpListener::bind(addr).unwrap(), ok());
    assert!(uploader.flush(Duration::from_secs(20)), "{:?}", uploader.stats());
    assert_eq!(received_seqs(&server), vec![7, 8, 9], "the newest survive");
}

#[test]
fn a_full_memory_queue_drops_the_oldest_without_blocking() {
    let addr = free_addr();
    let mut opts = fast_options(addr);
    opts.queue_capacity = 3;
    opts.backoff_cap = Duration::from_secs(5);
    let uploader = Uploader::start(opts).unwrap();
    for seq in 0..10 {
        uploader.submit(profile(seq));
    }
    let stats = uploader.stats();
    assert_eq!(stats.submitted, 10);
    assert!(stats.queued <= 4, "bounded queue: {stats:?}");
    assert!(stats.dropped >= 6, "{stats:?}");
    assert!(!uploader.flush(Duration::from_millis(300)));
}

#[test]
fn a_503_with_retry_after_is_honoured_too() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TestServer::start(
        listener,
        Box::new(|i| if i == 0 { (503, vec![("Retry-After", "1".to_string())]) } else { (200, Vec::new()) }),
    );
    let uploader = Uploader::start(fast_options(addr)).unwrap();
    uploader.submit(profile(3));
    assert!(uploader.flush(Duration::from_secs(15)), "{:?}", uploader.stats());
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert!(got[1].at - got[0].at >= Duration::from_millis(950), "retried before Retry-After: 1");
    assert_eq!(received_seqs(&server), vec![3, 3], "the same profile, sent again");
}

#[test]
fn the_memory_queue_is_bounded_in_bytes_too() {
    let addr = free_addr();
    let mut opts = fast_options(addr);
    opts.queue_capacity = 1000;
    // A few hundred bytes per small test profile: room for about two.
    opts.queue_max_bytes = 1500;
    opts.backoff_cap = Duration::from_secs(5);
    let uploader = Uploader::start(opts).unwrap();
    for seq in 0..20 {
        uploader.submit(profile(seq));
    }
    let stats = uploader.stats();
    assert!(stats.queued <= 6, "{stats:?}");
    assert!(stats.dropped >= 14, "{stats:?}");
}
