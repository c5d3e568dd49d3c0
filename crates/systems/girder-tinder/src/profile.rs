//! Profiles and the rules two profiles must meet to be shown to each other.
//!
//! A profile is its owner's self-description (name, age, gender, a short bio), where
//! they are, and what they look for (genders, an age range, a distance). Showing is
//! mutual: `a` is shown `b` only when each is what the other looks for and each is
//! within the other's distance — someone 40 km away who searches within 10 km is not
//! put in front of a viewer searching within 50 km, since a like could never be
//! returned.

use girder_geo::Point;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The youngest age a profile may state (and an age range may start at).
pub const AGE_MIN: i64 = 18;
/// The oldest age a profile may state (and an age range may end at).
pub const AGE_MAX: i64 = 120;
/// The shortest search distance, km.
pub const DISTANCE_KM_MIN: i64 = 1;
/// The longest search distance, km.
pub const DISTANCE_KM_MAX: i64 = 500;
/// The longest display name, in characters.
pub const NAME_CHARS_MAX: usize = 50;
/// The longest bio, in characters.
pub const BIO_CHARS_MAX: usize = 500;

/// A gender a profile states and searches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    /// A woman.
    Woman,
    /// A man.
    Man,
    /// Neither, or both.
    Nonbinary,
}

impl Gender {
    /// Every gender, in the order of their bits in a [`Genders`] set.
    pub const ALL: [Self; 3] = [Self::Woman, Self::Man, Self::Nonbinary];

    /// Its name as stored and served.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Woman => "woman",
            Self::Man => "man",
            Self::Nonbinary => "nonbinary",
        }
    }

    /// The gender named `text` (as [`Gender::as_str`] writes it).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    const fn bit(self) -> u8 {
        match self {
            Self::Woman => 1,
            Self::Man => 2,
            Self::Nonbinary => 4,
        }
    }
}

/// A set of genders, stored as a bit mask (woman 1, man 2, nonbinary 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Genders(u8);

impl Genders {
    /// The set holding `genders`.
    #[must_use]
    pub fn of(genders: &[Gender]) -> Self {
        Self(genders.iter().fold(0, |bits, g| bits | g.bit()))
    }

    /// The set a stored mask stands for; `None` for bits no gender has.
    #[must_use]
    pub fn from_bits(bits: i64) -> Option<Self> {
        u8::try_from(bits).ok().filter(|b| b & !7 == 0).map(Self)
    }

    /// The mask.
    #[must_use]
    pub const fn bits(self) -> i64 {
        self.0 as i64
    }

    /// Whether `gender` is in the set.
    #[must_use]
    pub const fn contains(self, gender: Gender) -> bool {
        self.0 & gender.bit() != 0
    }

    /// The genders in the set, in [`Gender::ALL`]'s order.
    #[must_use]
    pub fn to_vec(self) -> Vec<Gender> {
        Gender::ALL.into_iter().filter(|g| self.contains(*g)).collect()
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its owner's id (the token's subject).
    pub user: String,
    /// The display name.
    pub name: String,
    /// Age in years.
    pub age: i64,
    /// The owner's gender.
    pub gender: Gender,
    /// The genders the owner wants to be shown.
    pub interested_in: Genders,
    /// The youngest age the owner wants to be shown.
    pub age_min: i64,
    /// The oldest age the owner wants to be shown.
    pub age_max: i64,
    /// How far away, at most, the owner wants profiles from, km.
    pub max_distance_km: i64,
    /// Where the owner is.
    pub location: Point,
    /// A few words about the owner (may be empty).
    pub bio: String,
    /// When the profile was made, ms since the epoch.
    pub created_ms: i64,
    /// When it last changed (the location too), ms since the epoch.
    pub updated_ms: i64,
}

/// What a profile says, before it is stored: checked by [`ProfileDraft::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileDraft {
    /// The display name: 1–[`NAME_CHARS_MAX`] characters, not all spaces, no control
    /// characters.
    pub name: String,
    /// [`AGE_MIN`]–[`AGE_MAX`].
    pub age: i64,
    /// The owner's gender.
    pub gender: Gender,
    /// At least one gender, each at most once.
    pub interested_in: Vec<Gender>,
    /// [`AGE_MIN`]–[`AGE_MAX`], at most `age_max`.
    pub age_min: i64,
    /// [`AGE_MIN`]–[`AGE_MAX`].
    pub age_max: i64,
    /// [`DISTANCE_KM_MIN`]–[`DISTANCE_KM_MAX`] km.
    pub max_distance_km: i64,
    /// Latitude, degrees, within the geo index's ±85.05112878.
    pub lat: f64,
    /// Longitude, degrees, −180–180.
    pub lon: f64,
    /// At most [`BIO_CHARS_MAX`] characters; line breaks are the only control
    /// characters allowed.
    pub bio: String,
}

/// A rule a profile breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ProfileError {
    /// The field, as the API names it.
    pub field: &'static str,
    /// What it must be.
    pub rule: String,
}

fn broken(field: &'static str, rule: impl Into<String>) -> ProfileError {
    ProfileError { field, rule: rule.into() }
}

/// Checks a location: finite degrees that the geo index can hold.
///
/// # Errors
/// The latitude is beyond ±85.05112878 or the longitude beyond ±180.
pub fn check_location(lat: f64, lon: f64) -> Result<Point, ProfileError> {
    Point::indexable(lat, lon).map_err(|e| broken("location", e.to_string()))
}

impl ProfileDraft {
    /// Checks every rule, the first broken one reported.
    ///
    /// # Errors
    /// The first rule the draft breaks.
    pub fn check(&self) -> Result<(Genders, Point), ProfileError> {
        let name_chars = self.name.chars().count();
        if name_chars == 0
            || name_chars > NAME_CHARS_MAX
            || self.name.trim().is_empty()
            || self.name.chars().any(char::is_control)
        {
            return Err(broken(
                "name",
                format!("1–{NAME_CHARS_MAX} characters, not all spaces, no control characters"),
            ));
        }
        let age_rule = format!("{AGE_MIN}–{AGE_MAX}");
        if !(AGE_MIN..=AGE_MAX).contains(&self.age) {
            return Err(broken("age", age_rule));
        }
        if !(AGE_MIN..=AGE_MAX).contains(&self.age_min) {
            return Err(broken("age_min", age_rule));
        }
        if !(AGE_MIN..=AGE_MAX).contains(&self.age_max) {
            return Err(broken("age_max", age_rule));
        }
        if self.age_min > self.age_max {
            return Err(broken("age_min", "at most age_max"));
        }
        let interested = Genders::of(&self.interested_in);
        if self.interested_in.is_empty() || interested.to_vec().len() != self.interested_in.len() {
            return Err(broken("interested_in", "at least one gender, each at most once"));
        }
        if !(DISTANCE_KM_MIN..=DISTANCE_KM_MAX).contains(&self.max_distance_km) {
            return Err(broken("max_distance_km", format!("{DISTANCE_KM_MIN}–{DISTANCE_KM_MAX}")));
        }
        let location = check_location(self.lat, self.lon)?;
        if self.bio.chars().count() > BIO_CHARS_MAX
            || self.bio.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(broken(
                "bio",
                format!(
                    "at most {BIO_CHARS_MAX} characters, no control characters but line breaks"
                ),
            ));
        }
        Ok((interested, location))
    }
}

impl Profile {
    /// Whether `other` is what this profile's owner looks for (gender and age; the
    /// distance is checked by [`shown_to_each_other`]).
    #[must_use]
    pub fn wants(&self, other: &Self) -> bool {
        self.interested_in.contains(other.gender)
            && (self.age_min..=self.age_max).contains(&other.age)
    }

    /// Whether `dist_m` is within this profile's search distance.
    #[must_use]
    pub fn reaches(&self, dist_m: f64) -> bool {
        // Exact in f64: max_distance_km is at most 500.
        dist_m <= (self.max_distance_km * 1_000) as f64
    }
}

/// Whether `a` and `b`, `dist_m` apart, may be shown to each other: each wants the
/// other and each is within the other's distance.
#[must_use]
pub fn shown_to_each_other(a: &Profile, b: &Profile, dist_m: f64) -> bool {
    a.user != b.user && a.wants(b) && b.wants(a) && a.reaches(dist_m) && b.reaches(dist_m)
}

/// A distance as shown to other users: whole kilometres, rounded up, at least 1 — an
/// exact distance from several places would give a profile's position away.
#[must_use]
pub fn shown_km(dist_m: f64) -> u32 {
    let km = (dist_m / 1_000.0).ceil();
    if km.is_finite() { (km as u32).max(1) } else { u32::MAX }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ProfileDraft {
        ProfileDraft {
            name: "Ann".into(),
            age: 30,
            gender: Gender::Woman,
            interested_in: vec![Gender::Man],
            age_min: 25,
            age_max: 40,
            max_distance_km: 20,
            lat: 52.52,
            lon: 13.405,
            bio: String::new(),
        }
    }

    #[test]
    fn drafts_break_the_rules_they_should() {
        let check = |edit: fn(&mut ProfileDraft), field: Option<&str>| {
            let mut d = draft();
            edit(&mut d);
            assert_eq!(d.check().err().map(|e| e.field), field, "{d:?}");
        };
        check(|_| {}, None);
        check(|d| d.age = 17, Some("age"));
        check(|d| d.age = 121, Some("age"));
        check(|d| d.age = 18, None);
        check(|d| d.name = " ".into(), Some("name"));
        check(|d| d.name = "a".repeat(51), Some("name"));
        check(|d| d.name = "é".repeat(50), None);
        check(|d| d.name = "a\u{7}".into(), Some("name"));
        check(|d| d.age_min = 41, Some("age_min"));
        check(|d| d.age_max = 121, Some("age_max"));
        check(|d| d.interested_in = vec![], Some("interested_in"));
        check(|d| d.interested_in = vec![Gender::Man, Gender::Man], Some("interested_in"));
        check(|d| d.interested_in = Gender::ALL.to_vec(), None);
        check(|d| d.max_distance_km = 0, Some("max_distance_km"));
        check(|d| d.max_distance_km = 501, Some("max_distance_km"));
        check(|d| d.lat = 91.0, Some("location"));
        check(|d| d.lat = 85.1, Some("location"));
        check(|d| d.lon = -180.5, Some("location"));
        check(|d| d.lat = f64::NAN, Some("location"));
        check(|d| d.bio = "line\nbreak".into(), None);
        check(|d| d.bio = "tab\t".into(), Some("bio"));
        check(|d| d.bio = "b".repeat(501), Some("bio"));
    }

    fn profile(user: &str, gender: Gender, age: i64, wants: &[Gender], max_km: i64) -> Profile {
        Profile {
            user: user.into(),
            name: user.into(),
            age,
            gender,
            interested_in: Genders::of(wants),
            age_min: 25,
            age_max: 35,
            max_distance_km: max_km,
            location: Point::new(0.0, 0.0).unwrap(),
            bio: String::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn showing_is_mutual() {
        let ann = profile("ann", Gender::Woman, 30, &[Gender::Man], 20);
        let bob = profile("bob", Gender::Man, 31, &[Gender::Woman], 10);
        assert!(shown_to_each_other(&ann, &bob, 9_999.0));
        assert!(shown_to_each_other(&ann, &bob, 10_000.0), "the distance is inclusive");
        assert!(!shown_to_each_other(&ann, &bob, 10_001.0), "beyond bob's distance");
        let old = profile("old", Gender::Man, 36, &[Gender::Woman], 50);
        assert!(!shown_to_each_other(&ann, &old, 1.0), "outside ann's age range");
        let picky = profile("cat", Gender::Man, 30, &[Gender::Man], 50);
        assert!(!shown_to_each_other(&ann, &picky, 1.0), "cat wants men");
        assert!(!shown_to_each_other(&ann, &ann, 0.0), "never oneself");
    }

    #[test]
    fn shown_distances_round_up_to_whole_km() {
        assert_eq!(
            [0.0, 1.0, 999.0, 1_000.0, 1_000.1, 12_345.0].map(shown_km),
            [1, 1, 1, 1, 2, 13]
        );
    }

    #[test]
    fn gender_sets_round_trip() {
        for bits in 0..8 {
            let set = Genders::from_bits(bits).unwrap();
            assert_eq!(Genders::of(&set.to_vec()), set);
        }
        assert_eq!(Genders::from_bits(8), None);
        assert_eq!(Genders::from_bits(-1), None);
    }
}
