//! Readiness, reload and shutdown notices for systemd (`Type=notify`), through the `sd-notify` crate: a
//! datagram to `$NOTIFY_SOCKET` when it is set, nothing otherwise. A notice that cannot be sent is
//! logged, never fatal: hookgate serves the same without a service manager.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>], what: &str) {
    // The variable stays set: a later notice (STOPPING=1) goes to the same socket.
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "Cannot tell systemd the service is {what}.");
    }
}

/// The listeners are bound and the store is open: systemd may start what depends on hookgate.
pub fn ready() {
    send(&[NotifyState::Ready], "ready");
}

/// A reload has begun. The clock reading lets `Type=notify-reload` match it to its signal.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now], "reloading"),
        Err(_) => send(&[NotifyState::Reloading], "reloading"),
    }
}

/// A reload has ended; `status` (what `systemctl status` shows) says how.
pub fn reloaded(status: &str) {
    send(
        &[NotifyState::Ready, NotifyState::Status(status)],
        "ready again",
    );
}

/// Shutdown has begun (SIGTERM or SIGINT): requests in progress are being finished.
pub fn stopping() {
    send(&[NotifyState::Stopping], "stopping");
}
