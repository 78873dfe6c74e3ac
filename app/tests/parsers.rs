//! Property tests of the parsers at the edge: whatever bytes arrive, they
//! answer (no panic) and keep their promises. A fixed number of cases runs
//! with `cargo test`; `PROPTEST_CASES=100000 cargo test -p shortener --test
//! parsers` runs longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use shortener::domain::{
    ShortCode, TargetPolicy, TargetUrl, parse_event_type, parse_title, parse_username,
};
use shortener::seed::csv::{REPORTED_ERRORS, read_users};
use shortener::store::Page;

fn config() -> ProptestConfig {
    // 256 cases by default (seconds); PROPTEST_CASES overrides.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn short_code_parse_never_panics_and_accepted_codes_round_trip(raw in any::<String>()) {
        if let Ok(code) = ShortCode::parse(&raw) {
            prop_assert_eq!(code.as_str(), raw.as_str());
            prop_assert!(ShortCode::could_be(code.as_str()));
            prop_assert_eq!(ShortCode::parse(code.as_str()), Ok(code.clone()));
        }
    }

    #[test]
    fn every_valid_custom_code_could_be_a_code(raw in "[A-Za-z0-9_-]{3,32}") {
        if let Ok(code) = ShortCode::parse(&raw) {
            prop_assert!(ShortCode::could_be(code.as_str()));
        } else {
            prop_assert!(ShortCode::is_reserved(&raw));
        }
    }

    #[test]
    fn generated_codes_parse(seed in any::<u64>()) {
        use rand::SeedableRng as _;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let code = ShortCode::generate_with(&mut rng);
        prop_assert!(ShortCode::could_be(code.as_str()));
        prop_assert!(ShortCode::parse(code.as_str()).is_ok() || ShortCode::is_reserved(code.as_str()));
    }

    #[test]
    fn target_urls_reparse_to_the_same(raw in any::<String>()) {
        if let Ok(target) = TargetUrl::parse(&raw) {
            let again = TargetUrl::parse(target.as_str()).expect("an accepted URL parses again");
            prop_assert_eq!(&again, &target);
            prop_assert!(target.as_str().len() <= TargetUrl::MAX_LEN);
            let parsed = url::Url::parse(target.as_str()).unwrap();
            prop_assert!(matches!(parsed.scheme(), "http" | "https"));
            prop_assert!(parsed.host_str().is_some_and(|h| !h.is_empty()));
            // Serialised by the URL parser, it still reads as the same URL.
            let normalised = url::Url::parse(parsed.as_str()).unwrap();
            prop_assert_eq!(normalised, parsed);
            let _ = TargetPolicy::default().check(&target);
        }
    }

    #[test]
    fn url_like_strings_never_panic(
        scheme in "(https?|ftp|javascript|HTTP)",
        rest in r"[:/\\@a-z0-9.\[\]%#?\u{200B}\u{202E} -]{0,40}",
    ) {
        let raw = format!("{scheme}:{rest}");
        if let Ok(target) = TargetUrl::parse(&raw) {
            prop_assert!(!target.as_str().contains('\\'));
            prop_assert!(url::Url::parse(target.as_str()).unwrap().username().is_empty());
            let _ = TargetPolicy::default().check(&target);
        }
    }

    #[test]
    fn text_fields_are_trimmed_and_bounded(raw in any::<String>()) {
        if let Ok(name) = parse_username(&raw) {
            prop_assert_eq!(name.as_str(), name.trim());
            prop_assert!(!name.is_empty() && name.chars().count() <= 100);
            prop_assert!(!name.chars().any(char::is_control));
        }
        if let Ok(Some(title)) = parse_title(&raw) {
            prop_assert!(!title.is_empty() && title.chars().count() <= 300);
        }
        if let Ok(ty) = parse_event_type(&raw) {
            prop_assert!(ty != "redirect" && !ty.is_empty() && ty.len() <= 64);
        }
    }

    #[test]
    fn csv_import_never_panics_and_its_report_is_bounded(
        header in "(id,)?(username|email|created_at|x)(,(username|email|created_at|id|x)){0,4}",
        lines in proptest::collection::vec(r#"[^\r\n]{0,60}"#, 0..300),
    ) {
        let file = format!("{header}\n{}", lines.join("\n"));
        if let Ok(parsed) = read_users(file.as_bytes(), 10_000) {
            prop_assert!(parsed.errors.len() <= REPORTED_ERRORS);
            prop_assert!(parsed.rows.len() + parsed.errors.len() + parsed.errors_omitted as usize <= lines.len());
            for error in &parsed.errors {
                prop_assert!(error.error.chars().count() <= 201);
            }
        }
    }

    #[test]
    fn csv_import_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = read_users(bytes.as_slice(), 100);
    }

    #[test]
    fn page_offsets_never_overflow(page in any::<u32>(), per_page in any::<u32>()) {
        let p = Page { page, per_page, after_id: None };
        prop_assert!(p.offset() >= 0);
        prop_assert_eq!(
            p.offset(),
            i64::from(page.saturating_sub(1)).saturating_mul(i64::from(per_page))
        );
        prop_assert_eq!(p.limit(), i64::from(per_page));
    }
}
