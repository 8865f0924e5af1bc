//! The append order of a partition: a ticket per produce part, taken when the
//! part reaches the owning shard (synchronously, before any `.await`), and a turn
//! that passes from ticket to ticket in the order they were taken.
//!
//! Why: between arriving on the owning shard and appending, a produce part may
//! wait (the partition loads from the store, the shard waits for buffer room).
//! Without turns, a later request that needs no wait would append first, and a
//! producer's batches would be stored out of the order it sent them. With turns,
//! what arrives first appends first, whatever each part waited for. A ticket whose
//! holder gives up (timeout, closed connection) is skipped when its turn comes.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use futures::channel::oneshot;

type Key = (Arc<str>, i32);
type Book = RefCell<HashMap<Key, Rc<Order>>>;

/// The append orders of a shard's partitions, by topic name and index. Kept apart
/// from the partitions themselves: a part may take its ticket before its
/// partition exists on the shard (the owner has not yet installed the snapshot
/// that created the topic, or the partition is not loaded), and its place in
/// line must still be the place it arrived at. An order leaves the book when its
/// last ticket is dropped.
#[derive(Default)]
pub struct OrderBook {
    book: Rc<Book>,
}

impl OrderBook {
    /// A place in the append order of `topic`/`index`.
    pub fn ticket(&self, topic: &Arc<str>, index: i32) -> Ticket {
        let order = self
            .book
            .borrow_mut()
            .entry((topic.clone(), index))
            .or_insert_with(|| {
                Rc::new(Order {
                    home: Some((Rc::downgrade(&self.book), (topic.clone(), index))),
                    ..Order::default()
                })
            })
            .clone();
        order.ticket()
    }

    /// Partitions with tickets outstanding.
    #[cfg(test)]
    pub fn partitions(&self) -> usize {
        self.book.borrow().len()
    }
}

/// Tickets and turns of one partition (or of any other line, standalone).
#[derive(Default)]
pub struct Order {
    /// The book this order is filed in, to leave it when idle.
    home: Option<(Weak<Book>, Key)>,
    /// The next ticket to hand out.
    next: Cell<u64>,
    /// The ticket whose turn it is.
    serving: Cell<u64>,
    /// Holders waiting for their turn, by ticket.
    waiters: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    /// Tickets given up before their turn came.
    abandoned: RefCell<BTreeSet<u64>>,
}

/// A place in a partition's append order. Dropping it (after appending, or
/// giving up) passes the turn on.
pub struct Ticket {
    order: Rc<Order>,
    n: u64,
}

impl Order {
    /// Takes the next place in line. Call it before any `.await` of the request's
    /// path on the owning shard: the ticket order is the arrival order.
    pub fn ticket(self: &Rc<Self>) -> Ticket {
        let n = self.next.get();
        self.next.set(n + 1);
        Ticket {
            order: self.clone(),
            n,
        }
    }

    /// Tickets handed out whose holders have not finished.
    pub fn queued(&self) -> u64 {
        self.next.get() - self.serving.get()
    }

    fn advance(&self) {
        let mut s = self.serving.get() + 1;
        {
            let mut ab = self.abandoned.borrow_mut();
            while ab.remove(&s) {
                s += 1;
            }
        }
        self.serving.set(s);
        if let Some(w) = self.waiters.borrow_mut().remove(&s) {
            let _ = w.send(());
        }
    }
}

impl Ticket {
    /// Whether every earlier ticket has appended or given up.
    pub fn is_turn(&self) -> bool {
        self.order.serving.get() == self.n
    }

    /// Resolves when every earlier ticket has appended or given up.
    pub async fn turn(&self) {
        while !self.is_turn() {
            let (tx, rx) = oneshot::channel();
            self.order.waiters.borrow_mut().insert(self.n, tx);
            // Sent by `advance` when the turn reaches this ticket; the sender
            // lives in the order this ticket holds, so it is never dropped unsent.
            let _ = rx.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let o = &self.order;
        o.waiters.borrow_mut().remove(&self.n);
        if o.serving.get() == self.n {
            o.advance();
        } else if o.serving.get() < self.n {
            o.abandoned.borrow_mut().insert(self.n);
        }
        if o.queued() == 0 {
            if let Some((book, key)) = &o.home {
                if let Some(book) = book.upgrade() {
                    let mut b = book.borrow_mut();
                    if b.get(key).is_some_and(|x| Rc::ptr_eq(x, o)) {
                        b.remove(key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn turns_follow_ticket_order_and_skip_abandoned() {
        let o = Rc::new(Order::default());
        let a = o.ticket();
        let b = o.ticket();
        let c = o.ticket();
        let d = o.ticket();
        assert!(a.turn().now_or_never().is_some());
        assert!(b.turn().now_or_never().is_none());
        let mut wait_d = Box::pin(d.turn());
        assert!((&mut wait_d).now_or_never().is_none());
        // c gives up before its turn; b finishing passes the turn straight to d.
        drop(c);
        drop(a);
        assert!(b.turn().now_or_never().is_some());
        assert!((&mut wait_d).now_or_never().is_none());
        drop(b);
        assert!(wait_d.now_or_never().is_some());
        drop(d);
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn book_keeps_an_order_only_while_tickets_are_out() {
        let book = OrderBook::default();
        let t: Arc<str> = "t".into();
        let a = book.ticket(&t, 0);
        let b = book.ticket(&t, 0);
        let other = book.ticket(&t, 1);
        assert_eq!(book.partitions(), 2);
        assert!(other.turn().now_or_never().is_some());
        assert!(b.turn().now_or_never().is_none());
        drop(other);
        assert_eq!(book.partitions(), 1);
        drop(a);
        assert!(b.turn().now_or_never().is_some());
        drop(b);
        assert_eq!(book.partitions(), 0);
        // A new line starts at the front.
        assert!(book.ticket(&t, 0).turn().now_or_never().is_some());
    }
}
