//! The booking flows — reserve, confirm, cancel — and the rules that keep the
//! promise: a seat is sold once (the reservation store's atomic transitions), no
//! seat is sold without a charge (charge first, then RESERVED → SOLD, refund if
//! that fails), and one key never charges twice (the provider is idempotent per
//! key, and a per-reservation claim lets only one key charge).

use super::api::{ErrorKind, ReservationView};
use super::payment::PaymentError;
use super::seats::HoldError;
use super::store::{Reservation, ReservationState, Section};
use super::{Ticketmaster, new_id};

/// Most seats one reservation may hold.
pub const SEATS_PER_RESERVATION_MAX: usize = 10;

/// The seat id of a section's row and number: `A-3-12`.
#[must_use]
pub fn seat_id(section: &str, row: u32, number: u32) -> String {
    format!("{section}-{row}-{number}")
}

/// The price of seat `id` if it exists in `sections` (canonical spelling only:
/// `A-03-1` is not `A-3-1`).
#[must_use]
pub fn seat_price(sections: &[Section], id: &str) -> Option<i64> {
    let mut parts = id.rsplitn(3, '-');
    let number: u32 = parts.next()?.parse().ok()?;
    let row: u32 = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    let section = sections.iter().find(|s| s.name == name)?;
    let exists = (1..=section.rows).contains(&row) && (1..=section.seats_per_row).contains(&number);
    (exists && seat_id(name, row, number) == id).then_some(section.price_cents)
}

impl Ticketmaster {
    /// Holds `seats` of `event_id` for `user`, all or none.
    pub(super) async fn reserve(
        &self,
        event_id: &str,
        user: &str,
        seats: &[String],
        admission: Option<&str>,
    ) -> Result<Reservation, ErrorKind> {
        let entry = self
            .event_and_venue(event_id)
            .await?
            .ok_or_else(|| ErrorKind::UnknownEvent(event_id.to_owned()))?;
        let (event, venue) = &*entry;
        if event.admit_per_sec.is_some() {
            match admission {
                None => return Err(ErrorKind::AdmissionRequired),
                Some(token) if !self.admissions.verify(event_id, user, token) => {
                    return Err(ErrorKind::AdmissionInvalid);
                }
                Some(_) => {}
            }
        }
        let mut amount_cents: i64 = 0;
        let mut unknown = Vec::new();
        for seat in seats {
            match seat_price(&venue.sections, seat) {
                Some(price) => amount_cents = amount_cents.saturating_add(price),
                None => unknown.push(seat.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(ErrorKind::UnknownSeats(unknown));
        }
        let mut sorted = seats.to_vec();
        sorted.sort();
        // The reservation id is the store's holder: "sold to this reservation"
        // is then exact, even for a user holding the same seat twice.
        let id = new_id("r");
        let ttl_ms = self.config.hold_ttl_ms;
        let hold = match self.seats.hold(event_id, &sorted, &id, ttl_ms).await {
            Ok(hold) => {
                self.seats_changed();
                hold
            }
            Err(HoldError::Taken(taken)) => {
                metrics::counter!("girder_ticketmaster_hold_conflicts_total").increment(1);
                return Err(ErrorKind::SeatsTaken(taken));
            }
            Err(HoldError::Unknown(unknown)) => return Err(ErrorKind::UnknownSeats(unknown)),
            Err(HoldError::Store(e)) => return Err(e.into()),
        };
        let reservation = Reservation {
            id,
            event_id: event_id.to_owned(),
            user: user.to_owned(),
            seats: sorted,
            hold_id: hold.id.clone(),
            until_ms: hold.until_ms,
            state: ReservationState::Held,
            charge_id: None,
            confirming_key: None,
            amount_cents,
            created_at_ms: self.now_ms(),
        };
        if let Err(e) = self.db.insert_reservation(&reservation).await {
            // Without its row nobody could confirm or cancel the hold: give the
            // seats back now rather than at `until`.
            let _ = self.seats.release(&reservation).await;
            self.seats_changed();
            return Err(e.into());
        }
        metrics::counter!("girder_ticketmaster_holds_total").increment(1);
        Ok(reservation)
    }

    /// Pays for and sells a held reservation. Runs under the Idempotency-Key claim
    /// the request holds (girder-http's layer); see the module doc for the order
    /// of steps.
    pub(super) async fn confirm(
        &self,
        reservation_id: &str,
        user: &str,
        key: &str,
        token: &str,
    ) -> Result<ReservationView, ErrorKind> {
        let r = self
            .db
            .reservation(reservation_id)
            .await?
            .ok_or_else(|| ErrorKind::UnknownReservation(reservation_id.to_owned()))?;
        if r.user != user {
            return Err(ErrorKind::NotOwner);
        }
        let ours = r.confirming_key.as_deref() == Some(key);
        match r.state {
            // This key already sold it (its answer was lost): answer again.
            ReservationState::Confirmed if ours => return Ok(ReservationView::from(r)),
            ReservationState::Held => {}
            ReservationState::Expired => {
                if ours {
                    self.refund_lost(&r, key).await?;
                }
                return Err(ErrorKind::HoldExpired);
            }
            state => return Err(ErrorKind::NotHeld(state)),
        }
        // A key resuming its own confirmation goes on to the store, which alone
        // knows whether its confirm landed; anyone else stops at `until`.
        if !ours && self.now_ms() >= r.until_ms {
            return Err(ErrorKind::HoldExpired);
        }
        if !self.db.claim_confirmation(&r.id, key).await? {
            let now = self.db.reservation(&r.id).await?;
            return Err(match now {
                Some(now) if now.state != ReservationState::Held => ErrorKind::NotHeld(now.state),
                _ => ErrorKind::OtherKeyInProgress,
            });
        }
        let charge = match self.provider.charge(key, &r.id, r.amount_cents, token).await {
            Ok(charge) => charge,
            Err(PaymentError::Declined(reason)) => {
                // Nothing was charged: the owner may pay again with a new key.
                self.db.release_confirmation(&r.id, key).await?;
                metrics::counter!("girder_ticketmaster_payment_failures_total", "reason" => "declined")
                    .increment(1);
                return Err(ErrorKind::Declined(reason));
            }
            Err(PaymentError::Timeout) => {
                metrics::counter!("girder_ticketmaster_payment_failures_total", "reason" => "timeout")
                    .increment(1);
                return Err(ErrorKind::PaymentTimeout);
            }
            Err(PaymentError::KeyReused) => return Err(ErrorKind::KeyUsedElsewhere),
            Err(PaymentError::Store(e)) => return Err(e.into()),
        };
        if charge.refunded {
            // The sweeper refunded it after the hold lapsed.
            return Err(ErrorKind::HoldExpired);
        }
        if self.seats.confirm(&r).await? {
            self.seats_changed();
            self.db.mark_confirmed(&r.id, &charge.id).await?;
            metrics::counter!("girder_ticketmaster_confirmations_total").increment(1);
            let mut view = ReservationView::from(r);
            view.state = ReservationState::Confirmed;
            view.charge_id = Some(charge.id);
            return Ok(view);
        }
        // The hold lapsed between the charge and the sale: the seats may be
        // someone else's now. Give the money back.
        self.provider.refund(&charge.id).await?;
        self.db.end_hold(&r.id, ReservationState::Expired).await?;
        metrics::counter!("girder_ticketmaster_refunds_total", "reason" => "hold-lost")
            .increment(1);
        Err(ErrorKind::HoldExpired)
    }

    /// Refunds what `key` charged for a reservation whose hold is gone — unless
    /// the store shows its seats sold by the hold, then records the sale.
    async fn refund_lost(&self, r: &Reservation, key: &str) -> Result<(), ErrorKind> {
        if self.seats.sold_by(r).await?
            && let Some(charge) =
                self.provider.charges_for(key).await?.into_iter().find(|c| !c.refunded)
        {
            self.db.mark_confirmed(&r.id, &charge.id).await?;
            return Ok(());
        }
        if self.provider.refund_key(key).await? {
            metrics::counter!("girder_ticketmaster_refunds_total", "reason" => "hold-lost")
                .increment(1);
        }
        Ok(())
    }

    /// Releases a held reservation; only its owner, only while held and no
    /// confirmation is under way.
    pub(super) async fn cancel(&self, reservation_id: &str, user: &str) -> Result<(), ErrorKind> {
        let r = self
            .db
            .reservation(reservation_id)
            .await?
            .ok_or_else(|| ErrorKind::UnknownReservation(reservation_id.to_owned()))?;
        if r.user != user {
            return Err(ErrorKind::NotOwner);
        }
        if r.state != ReservationState::Held {
            return Err(ErrorKind::NotHeld(r.state));
        }
        if !self.db.cancel_hold(&r.id).await? {
            let now = self.db.reservation(&r.id).await?;
            return Err(match now {
                Some(now) if now.state != ReservationState::Held => ErrorKind::NotHeld(now.state),
                _ => ErrorKind::OtherKeyInProgress,
            });
        }
        self.seats.release(&r).await?;
        self.seats_changed();
        metrics::counter!("girder_ticketmaster_cancellations_total").increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_ids_parse_canonically() {
        let sections = vec![
            Section { name: "A".into(), rows: 3, seats_per_row: 12, price_cents: 500 },
            Section { name: "Box_1".into(), rows: 1, seats_per_row: 2, price_cents: 9_000 },
        ];
        assert_eq!(seat_price(&sections, "A-3-12"), Some(500));
        assert_eq!(seat_price(&sections, "A-1-1"), Some(500));
        assert_eq!(seat_price(&sections, "Box_1-1-2"), Some(9_000));
        for bad in [
            "A-4-1", "A-0-1", "A-1-13", "A-03-1", "A-1-+1", "B-1-1", "A-1", "", "A--1-1", "A-1-1-1",
        ] {
            assert_eq!(seat_price(&sections, bad), None, "{bad}");
        }
    }
}
