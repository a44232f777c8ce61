//! Readiness and shutdown notices for systemd (`Type=notify`), through the `sd-notify` crate: a
//! datagram to `$NOTIFY_SOCKET` when it is set, nothing otherwise. A notice that cannot be sent is
//! logged, never fatal: hookgate serves the same without a service manager.

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>, what: &str) {
    // The variable stays set: a later notice (STOPPING=1) goes to the same socket.
    if let Err(error) = sd_notify::notify(false, &[state]) {
        tracing::warn!(%error, "Cannot tell systemd the service is {what}.");
    }
}

/// The listeners are bound and the store is open: systemd may start what depends on hookgate.
pub fn ready() {
    send(NotifyState::Ready, "ready");
}

/// Shutdown has begun (SIGTERM or SIGINT): requests in progress are being finished.
pub fn stopping() {
    send(NotifyState::Stopping, "stopping");
}
