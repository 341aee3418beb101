//! The cross-script corpus (`fixtures/name_pairs.tsv`): each pair is one person as two
//! states' documents write them, and must blind alike; and a synthetic population built
//! from the same name parts, to count how many different people the folds merge.

use std::collections::HashMap;

use ewn_model::SubjectKind;
use ewn_trust::BlindingKey;
use ewn_trust::blind::normalise;

const CORPUS: &str = include_str!("fixtures/name_pairs.tsv");

fn pairs() -> Vec<(&'static str, &'static str)> {
    CORPUS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 4, "bad corpus line: {l}");
            (cols[1], cols[3])
        })
        .collect()
}

#[test]
fn every_pair_blinds_alike() {
    let key = BlindingKey::from_bytes([11; 32]);
    let pairs = pairs();
    assert!(pairs.len() >= 30);
    for (a, b) in pairs {
        assert_eq!(
            key.blind(SubjectKind::Person, a),
            key.blind(SubjectKind::Person, b),
            "{a} / {b}: {} / {}",
            normalise(SubjectKind::Person, a),
            normalise(SubjectKind::Person, b)
        );
    }
}

/// 10,000 distinct synthetic people (surname, given name, date of birth) from the corpus's
/// Latin name parts: the folds must not merge any two of them. Different people whose names
/// differ only in what the folds erase are counted separately below.
#[test]
fn synthetic_people_stay_apart() {
    let surnames = [
        "IVANOV",
        "ALIEV",
        "SMIRNOVA",
        "KOVALEV",
        "KHABIBULLAEV",
        "GULOMOV",
        "KODIROV",
        "CHORIEV",
        "YUSUPOVA",
        "ABILKASYMOV",
        "OTEGENOVA",
        "NURGALI",
        "SERIKBAEV",
        "ASANOV",
        "ZHEENBEKOV",
        "JURAEV",
        "RAHMONI",
        "KURBONOV",
        "CHARYEV",
        "ANNAEV",
        "BERDYEV",
        "OVEZOV",
        "NURIEV",
        "NIYAZOV",
        "KARIMOVA",
        "MAMEDOV",
        "TSOI",
        "SHCHERBAKOV",
        "TOKTOGULOVA",
        "KUDAIBERGENOVA",
    ];
    let given = [
        "TIMUR",
        "RUSTAM",
        "YULIA",
        "DMITRY",
        "ZAFAR",
        "OTKIR",
        "SHERZOD",
        "BAKHTIYOR",
        "GULNORA",
        "NURLAN",
        "AIGUL",
        "GALYMZHAN",
        "ZHAKSYLYK",
        "ASEL",
        "UMUT",
        "BAKYT",
        "NURBEK",
        "HAMID",
        "JAMSHED",
        "SUHROB",
        "SHOHRAT",
        "ZHANNA",
        "MERGEN",
        "AMAN",
        "GULSHAT",
        "SAPAR",
        "DILNOZA",
        "ELDAR",
        "VIKTOR",
        "ILIA",
    ];
    // name only: every surname x given-name combination stays distinct
    let mut names = std::collections::HashSet::new();
    for s in surnames {
        for g in given {
            names.insert(normalise(SubjectKind::Person, &format!("{s} {g}")));
        }
    }
    assert_eq!(names.len(), surnames.len() * given.len());
    let mut seen: HashMap<String, (usize, usize, u32)> = HashMap::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut people = 0;
    let mut merged = 0;
    while people < 10_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let s = (state >> 33) as usize % surnames.len();
        let g = (state >> 17) as usize % given.len();
        let day = (state >> 40) as u32 % 20_000; // days since 1950-01-01, roughly
        let (y, m, d) = (1950 + day / 365, 1 + (day / 28) % 12, 1 + day % 28);
        let person = (s, g, y * 10_000 + m * 100 + d);
        let raw = format!("{} {} {y:04}-{m:02}-{d:02}", surnames[s], given[g]);
        let canonical = normalise(SubjectKind::Person, &raw);
        match seen.get(&canonical) {
            Some(&other) if other == person => continue, // the same person drawn twice
            Some(_) => merged += 1,
            None => {
                seen.insert(canonical, person);
            }
        }
        people += 1;
    }
    assert_eq!(merged, 0, "{merged} of {people} synthetic people merged");
}
