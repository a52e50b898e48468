//! Domain values to the wire's answer shapes (`shared::protocol::answer`):
//! what a method returns becomes the `data` of its response here, so
//! neither the methods nor the models know the JSON.

use crate::methods::auth::{LoggedIn, Started};
use crate::methods::seats::Held;
use crate::methods::CurrentUser;
use crate::models::catalogue::{Cinema, Screening};
use crate::models::seats::{Booking, Release};
use crate::shared::ids::ScreeningId;
use crate::shared::protocol::answer::{
    self, AuthStarted, AuthVerified, BookingChanged, BookingOut, Bookings, CinemaOut, Cinemas,
    Enrolment, FilmOut, HallRef, Me, Released, ScreeningOut, Screenings, UserOut,
};

/// The wire's `user` object.
pub fn user(u: &CurrentUser) -> UserOut<'_> {
    UserOut {
        id: u.id,
        username: &u.username,
    }
}

/// `me`.
pub fn me(u: &CurrentUser) -> Me<'_> {
    Me { user: user(u) }
}

pub fn started(s: Started) -> AuthStarted {
    match s {
        Started::User => AuthStarted::user(),
        Started::Candidate {
            otpauth_url,
            qr_code,
            secret,
        } => AuthStarted::candidate(Enrolment {
            otpauth_url,
            qr_code,
            secret,
        }),
    }
}

pub fn verified(l: &LoggedIn) -> AuthVerified<'_> {
    AuthVerified {
        expires_at: l.expires_at,
        token: &l.token,
        user: UserOut {
            id: l.user,
            username: l.username.as_str(),
        },
    }
}

pub fn cinemas(list: &[Cinema]) -> Cinemas<'_> {
    Cinemas {
        cinemas: list
            .iter()
            .map(|c| CinemaOut {
                address: &c.address,
                city: &c.city,
                id: c.id,
                name: &c.name,
                timezone: &c.timezone,
            })
            .collect(),
    }
}

pub fn screenings(list: &[Screening]) -> Screenings<'_> {
    Screenings {
        screenings: list
            .iter()
            .map(|s| ScreeningOut {
                cinema_id: s.cinema_id,
                currency: &s.currency,
                film: FilmOut {
                    age_rating: &s.age_rating,
                    duration_min: s.duration_min,
                    id: s.film_id,
                    title: &s.title,
                },
                hall: HallRef {
                    id: s.hall_id,
                    name: &s.hall_name,
                },
                id: s.id,
                price: s.price,
                prices: &s.prices,
                seats_free: s.seats_free,
                seats_total: s.seats_total,
                starts_at: s.starts_at,
            })
            .collect(),
    }
}

pub fn held(h: &Held) -> answer::Held<'_> {
    answer::Held {
        expires_at: h.expires_at,
        screening_id: h.screening,
        seat_ids: &h.seats,
        version: h.version,
    }
}

pub fn released(screening: ScreeningId, r: &Release) -> Released<'_> {
    Released {
        screening_id: screening,
        seat_ids: &r.seats,
        version: r.version,
    }
}

fn booking(b: &Booking) -> BookingOut<'_> {
    BookingOut {
        created_at: b.created_at,
        currency: &b.currency,
        id: b.id,
        screening_id: b.screening,
        seat_ids: &b.seats,
        status: &b.status,
        total: b.total,
    }
}

/// A booking made or cancelled, with the screening's version after it.
pub fn booking_changed(b: &Booking, version: i64) -> BookingChanged<'_> {
    BookingChanged {
        booking: booking(b),
        version,
    }
}

pub fn bookings(list: &[Booking]) -> Bookings<'_> {
    Bookings {
        bookings: list.iter().map(booking).collect(),
    }
}
