//! A one-value channel whose receiving end is a future, for `map_async`'s callback: no async
//! runtime dependency, and the same code natively (where polling the device runs the callback)
//! and in the browser (where the event loop does).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::context::poisoned;
use crate::error::{Error, GpuErrorKind, Result};

struct Slot<T> {
    value: Option<T>,
    /// The sender is gone without sending (wgpu dropped the callback): fail instead of hanging.
    closed: bool,
    waker: Option<Waker>,
}

pub(crate) struct Sender<T>(Arc<Mutex<Slot<T>>>);
pub(crate) struct Receiver<T>(Arc<Mutex<Slot<T>>>);

pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        closed: false,
        waker: None,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    pub(crate) fn send(self, v: T) {
        if let Ok(mut s) = self.0.lock() {
            s.value = Some(v);
        }
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.closed = true;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut s = match self.0.lock() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(poisoned(e))),
        };
        if let Some(v) = s.value.take() {
            return Poll::Ready(Ok(v));
        }
        if s.closed {
            return Poll::Ready(Err(Error::gpu(
                GpuErrorKind::Other,
                "a GPU callback was dropped without running (device lost or context dropped?)",
            )));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sent_from_another_thread_arrives() {
        let (tx, rx) = oneshot();
        let t = std::thread::spawn(move || tx.send(5));
        assert_eq!(pollster::block_on(rx).ok(), Some(5));
        assert!(t.join().is_ok());
    }

    #[test]
    fn a_dropped_sender_is_an_error_not_a_hang() {
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert!(pollster::block_on(rx).is_err());
    }
}
