//! The simulated network: five Central Asian member states, their border agencies, named
//! border crossings between them and a few inland desks.
//!
//! Crossings are real road (or road and rail) checkpoints; each has one side per state
//! with its own id (`KZ-KORDAY` faces `KG-AKZHOL`), the ISO 3166-2 code of the region
//! the side lies in, and approximate coordinates (a few hundred metres are irrelevant
//! here). Each side has a few posts (`KZ-KORDAY-01`, ...) that file the reports.

/// A member state and the agency that reports for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemberState {
    /// ISO 3166-1 alpha-2, upper case.
    pub code: &'static str,
    pub name: &'static str,
    /// The reporting agency (`reporter.agency`).
    pub agency: &'static str,
    /// Inland desks (national or regional offices) that report away from the border.
    pub desks: &'static [Place],
}

/// A place that reports: an inland desk, or one side of a crossing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Place {
    /// `KZ-KORDAY` for a crossing side, `KZ-ALA-DESK` for a desk.
    pub id: &'static str,
    pub state: &'static str,
    /// ISO 3166-2 code of the region (`location.area`).
    pub area: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// How many posts file reports here (`<id>-01` ..).
    pub posts: u8,
    /// A side of a border crossing (its id goes into `location.crossing`).
    pub crossing: bool,
}

impl Place {
    /// The id of post `n` (1-based) of this place.
    pub fn post_id(&self, n: u8) -> String {
        format!("{}-{:02}", self.id, n)
    }
}

/// A border crossing between two member states, one side in each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crossing {
    pub name: &'static str,
    pub sides: [Place; 2],
}

const fn side(
    id: &'static str,
    state: &'static str,
    area: &'static str,
    lat: f64,
    lon: f64,
    posts: u8,
) -> Place {
    Place {
        id,
        state,
        area,
        lat,
        lon,
        posts,
        crossing: true,
    }
}

const fn desk(
    id: &'static str,
    state: &'static str,
    area: &'static str,
    lat: f64,
    lon: f64,
) -> Place {
    Place {
        id,
        state,
        area,
        lat,
        lon,
        posts: 1,
        crossing: false,
    }
}

pub const STATES: [MemberState; 5] = [
    MemberState {
        code: "KZ",
        name: "Kazakhstan",
        agency: "KZ-KNB",
        desks: &[
            desk("KZ-ALA-DESK", "KZ", "KZ-ALA", 43.238, 76.889),
            desk("KZ-AST-DESK", "KZ", "KZ-AST", 51.169, 71.449),
        ],
    },
    MemberState {
        code: "KG",
        name: "Kyrgyzstan",
        agency: "KG-GKNB",
        desks: &[
            desk("KG-GB-DESK", "KG", "KG-GB", 42.875, 74.604),
            desk("KG-GO-DESK", "KG", "KG-GO", 40.528, 72.798),
        ],
    },
    MemberState {
        code: "TJ",
        name: "Tajikistan",
        agency: "TJ-GKNB",
        desks: &[
            desk("TJ-DU-DESK", "TJ", "TJ-DU", 38.560, 68.787),
            desk("TJ-SU-DESK", "TJ", "TJ-SU", 40.283, 69.622),
        ],
    },
    MemberState {
        code: "UZ",
        name: "Uzbekistan",
        agency: "UZ-SGB",
        desks: &[
            desk("UZ-TK-DESK", "UZ", "UZ-TK", 41.311, 69.280),
            desk("UZ-SA-DESK", "UZ", "UZ-SA", 39.654, 66.960),
        ],
    },
    MemberState {
        code: "TM",
        name: "Turkmenistan",
        agency: "TM-MNS",
        desks: &[
            desk("TM-S-DESK", "TM", "TM-S", 37.950, 58.383),
            desk("TM-L-DESK", "TM", "TM-L", 39.073, 63.579),
        ],
    },
];

pub const CROSSINGS: [Crossing; 11] = [
    Crossing {
        name: "Korday / Ak-Zhol",
        sides: [
            side("KZ-KORDAY", "KZ", "KZ-ZHA", 43.036, 74.712, 4),
            side("KG-AKZHOL", "KG", "KG-C", 43.022, 74.706, 4),
        ],
    },
    Crossing {
        name: "Karkara",
        sides: [
            side("KZ-KARKARA", "KZ", "KZ-ALM", 42.812, 79.071, 2),
            side("KG-KARKARA", "KG", "KG-Y", 42.797, 79.069, 2),
        ],
    },
    Crossing {
        name: "Zhibek Zholy / Gisht Kuprik",
        sides: [
            side("KZ-ZHIBEKZHOLY", "KZ", "KZ-YUZ", 41.381, 69.362, 4),
            side("UZ-GISHTKUPRIK", "UZ", "UZ-TO", 41.369, 69.356, 4),
        ],
    },
    Crossing {
        name: "Temirbaba / Garabogaz",
        sides: [
            side("KZ-TEMIRBABA", "KZ", "KZ-MAN", 41.535, 53.601, 2),
            side("TM-GARABOGAZ", "TM", "TM-B", 41.517, 53.618, 2),
        ],
    },
    Crossing {
        name: "Dostuk / Dustlik",
        sides: [
            side("KG-DOSTUK", "KG", "KG-O", 40.786, 72.697, 3),
            side("UZ-DUSTLIK", "UZ", "UZ-AN", 40.795, 72.681, 3),
        ],
    },
    Crossing {
        name: "Kyzyl-Art",
        sides: [
            side("KG-KYZYLART", "KG", "KG-O", 39.276, 73.341, 2),
            side("TJ-KYZYLART", "TJ", "TJ-GB", 39.257, 73.329, 2),
        ],
    },
    Crossing {
        name: "Karamyk",
        sides: [
            side("KG-KARAMYK", "KG", "KG-O", 39.401, 71.771, 2),
            side("TJ-KARAMYK", "TJ", "TJ-RA", 39.386, 71.758, 2),
        ],
    },
    Crossing {
        name: "Oybek / Fotehobod",
        sides: [
            side("UZ-OYBEK", "UZ", "UZ-TO", 40.641, 69.231, 3),
            side("TJ-FOTEHOBOD", "TJ", "TJ-SU", 40.627, 69.242, 3),
        ],
    },
    Crossing {
        name: "Sariosiyo / Tursunzoda",
        sides: [
            side("UZ-SARIOSIYO", "UZ", "UZ-SU", 38.468, 68.112, 3),
            side("TJ-TURSUNZODA", "TJ", "TJ-RA", 38.473, 68.131, 3),
        ],
    },
    Crossing {
        name: "Farap / Alat",
        sides: [
            side("TM-FARAP", "TM", "TM-L", 39.166, 63.614, 3),
            side("UZ-ALAT", "UZ", "UZ-BU", 39.181, 63.638, 3),
        ],
    },
    Crossing {
        name: "Shavat",
        sides: [
            side("TM-SHAVAT", "TM", "TM-D", 41.693, 60.218, 2),
            side("UZ-SHAVAT", "UZ", "UZ-XO", 41.661, 60.297, 2),
        ],
    },
];

/// The member state with this code.
pub fn state(code: &str) -> Option<&'static MemberState> {
    STATES.iter().find(|s| s.code == code)
}

/// Every crossing side in `state`.
pub fn sides_in(state: &str) -> Vec<&'static Place> {
    CROSSINGS
        .iter()
        .flat_map(|c| c.sides.iter())
        .filter(|s| s.state == state)
        .collect()
}

/// The crossing side with this id.
pub fn side_by_id(id: &str) -> Option<&'static Place> {
    CROSSINGS
        .iter()
        .flat_map(|c| c.sides.iter())
        .find(|s| s.id == id)
}

/// The state codes, in network order.
pub fn state_codes() -> Vec<String> {
    STATES.iter().map(|s| s.code.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_model_is_consistent() {
        let mut ids = HashSet::new();
        for c in &CROSSINGS {
            assert_ne!(c.sides[0].state, c.sides[1].state, "{}", c.name);
            for s in &c.sides {
                assert!(ids.insert(s.id), "side id {} is unique", s.id);
                assert!(s.id.starts_with(s.state) && s.area.starts_with(s.state));
                assert!(state(s.state).is_some());
                assert!((35.0..56.0).contains(&s.lat) && (46.0..88.0).contains(&s.lon));
                assert!(s.posts >= 1);
            }
        }
        for st in &STATES {
            // a transit needs two sides in one state
            assert!(sides_in(st.code).len() >= 2, "{}", st.code);
            assert!(st.agency.starts_with(st.code));
            for d in st.desks {
                assert!(ids.insert(d.id));
                assert_eq!(d.state, st.code);
            }
        }
        assert_eq!(side_by_id("KZ-KORDAY").map(|s| s.area), Some("KZ-ZHA"));
        assert_eq!(
            side_by_id("KG-AKZHOL").map(|s| s.post_id(2)),
            Some("KG-AKZHOL-02".into())
        );
    }
}
