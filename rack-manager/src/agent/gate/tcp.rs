//! A gate's TCP side: accept at the service address, hold the connection while the appliance
//! wakes, then relay it byte for byte.

use std::{sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};

use super::{CONNECT_DEADLINE, Gate, WAKE_DEADLINE};

/// Accepts connections to listen port number `port` forever (until the gate aborts the task).
pub(super) async fn accept(gate: Arc<Gate>, listener: TcpListener, port: usize) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of descriptors or memory: back off rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over the bound: closed at once, never queued.
        let Ok(permit) = gate.connections.clone().try_acquire_owned() else { continue };
        gate.touch();
        let gate = gate.clone();
        tokio::spawn(async move {
            relay(&gate, client, port).await;
            drop(permit);
        });
    }
}

/// Connects to a just-woken appliance. Its first SYN-ACK may be lost while the guest resolves the
/// host's MAC (smoltcp drops the packet that needed the lookup), and the kernel would resend the
/// SYN only after a second: so each try gets a short deadline, doubling, within
/// [`CONNECT_DEADLINE`] in all. A refusal is tried again the same way (a guest's listener pool
/// may be momentarily full); an appliance that is gone costs the client that deadline at most.
async fn connect(backend: std::net::SocketAddr) -> Option<TcpStream> {
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    let mut patience = Duration::from_millis(20);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(patience, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(_)) => tokio::time::sleep(patience / 4).await,
            Err(_) => {}
        }
        patience = (patience * 2).min(Duration::from_secs(1));
    }
    None
}

async fn relay(gate: &Arc<Gate>, mut client: TcpStream, port: usize) {
    // No appliance (a crash, a failed or too slow wake, the gate closing): the client's
    // connection is closed, never left hanging.
    let Ok(Ok((name, backend))) = tokio::time::timeout(WAKE_DEADLINE, gate.backend(port)).await else { return };
    if let Some(mut upstream) = connect(backend).await {
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
    gate.release(&name);
}
