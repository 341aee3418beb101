//! A relay in front of a broker that can cut the link of chosen clients, as a border post's
//! satellite link drops while the rest of the network stays up.
//!
//! The broker advertises the relay's address, so every client connects through it; each
//! connection is told apart by the `client.id` of its first Kafka request (every request
//! header carries it: size, api key, api version, correlation id, then the client id as a
//! length-prefixed string). While a client-id prefix is cut, its open connections are shut
//! and new ones are closed at once; other clients are untouched.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Open connections through the relay: (number, client id, client side, broker side); each
/// is removed when it closes.
type Links = Arc<Mutex<Vec<(u64, String, TcpStream, TcpStream)>>>;

pub struct LinkRelay {
    /// `127.0.0.1:PORT`, what the broker advertises.
    pub addr: String,
    cut: Arc<Mutex<Vec<String>>>,
    links: Links,
}

/// Largest first request read to find a client id (Kafka's first requests are small).
const MAX_FIRST_REQUEST: usize = 1 << 20;

/// The client id of a Kafka request frame (without its size prefix).
fn client_id(frame: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes(frame.get(8..10)?.try_into().ok()?);
    if len < 0 {
        return Some(String::new());
    }
    let id = frame.get(10..10 + len as usize)?;
    Some(String::from_utf8_lossy(id).into_owned())
}

impl LinkRelay {
    /// Binds a loopback port; connections are relayed to `upstream` (the broker's own
    /// listener), which need not be up yet.
    pub fn start(upstream: String) -> Result<LinkRelay, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("relay: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("relay: {e}"))?
            .to_string();
        let relay = LinkRelay {
            addr,
            cut: Arc::default(),
            links: Arc::default(),
        };
        let (cut, links) = (relay.cut.clone(), relay.links.clone());
        thread::Builder::new()
            .name("link-relay".into())
            .spawn(move || {
                for (n, client) in listener.incoming().flatten().enumerate() {
                    let (cut, links, upstream) = (cut.clone(), links.clone(), upstream.clone());
                    let _ = thread::Builder::new()
                        .name("link-relay-conn".into())
                        .spawn(move || relay_one(n as u64, client, &upstream, &cut, &links));
                }
            })
            .map_err(|e| format!("relay: {e}"))?;
        Ok(relay)
    }

    /// Cuts the link of every client whose `client.id` starts with `prefix`: its open
    /// connections are shut, new ones refused, until [`LinkRelay::restore`].
    pub fn cut(&self, prefix: &str) {
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(prefix.to_string());
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|(_, id, client, broker)| {
            if id.starts_with(prefix) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = broker.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Restores the link of the clients cut with `prefix`.
    pub fn restore(&self, prefix: &str) {
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p != prefix);
    }
}

fn relay_one(
    n: u64,
    mut client: TcpStream,
    upstream: &str,
    cut: &Mutex<Vec<String>>,
    links: &Links,
) {
    let mut size = [0u8; 4];
    if client.read_exact(&mut size).is_err() {
        return;
    }
    let len = i32::from_be_bytes(size);
    if len <= 0 || len as usize > MAX_FIRST_REQUEST {
        return;
    }
    let mut frame = vec![0u8; len as usize];
    if client.read_exact(&mut frame).is_err() {
        return;
    }
    let id = client_id(&frame).unwrap_or_default();
    let is_cut = cut
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|p| id.starts_with(p.as_str()));
    if is_cut {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut broker) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    if broker.write_all(&size).is_err() || broker.write_all(&frame).is_err() {
        return;
    }
    let (Ok(client_r), Ok(broker_w), Ok(broker_r), Ok(client_w)) = (
        client.try_clone(),
        broker.try_clone(),
        broker.try_clone(),
        client.try_clone(),
    ) else {
        return;
    };
    if let (Ok(c), Ok(b)) = (client.try_clone(), broker.try_clone()) {
        links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((n, id, c, b));
    }
    let up = thread::spawn(move || pipe(client_r, broker_w));
    pipe(broker_r, client_w);
    let _ = up.join();
    links
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(m, ..)| *m != n);
}

/// Copies `from` to `to` until either side closes, then shuts both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_id_is_read_from_a_request_header() {
        // api key 3 (Metadata), version 12, correlation id 7, client id "kz-gw".
        let mut frame = vec![0, 3, 0, 12, 0, 0, 0, 7, 0, 5];
        frame.extend_from_slice(b"kz-gw");
        frame.extend_from_slice(&[0, 0]);
        assert_eq!(client_id(&frame).as_deref(), Some("kz-gw"));
        assert_eq!(
            client_id(&[0, 3, 0, 12, 0, 0, 0, 7, 255, 255]).as_deref(),
            Some("")
        );
        assert_eq!(client_id(&[0, 3]), None);
    }
}
