//! Which visits are not people's: crawlers, link previewers (the fetch a chat app makes to
//! draw a link's card), uptime monitors, load testers. Their redirects are answered as
//! anyone's, but recorded as `bot_visit` events, not clicks: redirect counts, visit caps and
//! analytics leave them out (unless `COUNT_BOTS` says to count them).
//!
//! Known by their `User-Agent`, from the `isbot` crate's list of patterns, less those of
//! general-purpose HTTP libraries ([`NOT_BOTS`]): API clients and scripts acting for a
//! person use them (the contract's own tests among them), and their redirects stay clicks.

use axum::http::{HeaderValue, Method};

/// The patterns of `isbot`'s list that name HTTP client libraries and command-line tools,
/// not bots (each is an entry of that list, as written there: a test proves it).
pub const NOT_BOTS: &[&str] = &[
    "^curl",
    "^java/",
    "^php",
    "^php-curl-class",
    "^postmanruntime",
    "^lua-resty-http",
    "ahc/",
    "aiohttp",
    "axios",
    "go-http-client",
    "guzzlehttp",
    "http_get",
    "httpclient",
    "httpurlconnection",
    "httpx",
    "libwww-perl",
    "node-fetch/",
    "okhttp",
    "pcore-http",
    "pycurl",
    "python-requests",
    "python-urllib",
    "wget",
];

pub struct Bots {
    known: isbot::Bots,
    /// `COUNT_BOTS`: bots' `GET`s are clicks like anyone's.
    counted: bool,
}

impl Bots {
    pub fn new(counted: bool) -> Self {
        let mut known = isbot::Bots::default();
        known.remove(NOT_BOTS);
        Self { known, counted }
    }

    /// Whether a visit is a bot's: every `HEAD` (link checkers and unfurlers ask only
    /// whether the link answers), and a known bot's `User-Agent` unless bots are counted.
    pub fn is_bot_visit(&self, method: &Method, user_agent: Option<&HeaderValue>) -> bool {
        if method == Method::HEAD {
            return true;
        }
        !self.counted
            && user_agent
                .and_then(|ua| ua.to_str().ok())
                .is_some_and(|ua| self.known.is_bot(ua))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(bots: &Bots, method: Method, ua: &str) -> bool {
        bots.is_bot_visit(&method, Some(&HeaderValue::from_str(ua).unwrap()))
    }

    const PREVIEWERS: [&str; 8] = [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "TelegramBot (like TwitterBot)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "WhatsApp/2.23.20.0 A",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    ];
    const PEOPLE: [&str; 6] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "python-requests/2.31.0",
        "curl/8.5.0",
        "Go-http-client/1.1",
        "okhttp/4.12.0",
    ];

    #[test]
    fn previewers_and_crawlers_are_bots_and_people_and_their_libraries_are_not() {
        let bots = Bots::new(false);
        for ua in PREVIEWERS {
            assert!(visit(&bots, Method::GET, ua), "{ua}");
        }
        for ua in PEOPLE {
            assert!(!visit(&bots, Method::GET, ua), "{ua}");
        }
        assert!(!bots.is_bot_visit(&Method::GET, None));
        assert!(bots.is_bot_visit(&Method::HEAD, None));
        assert!(visit(&bots, Method::HEAD, PEOPLE[0]));
    }

    #[test]
    fn counted_bots_are_clicks_but_head_never_is() {
        let bots = Bots::new(true);
        assert!(!visit(&bots, Method::GET, PREVIEWERS[0]));
        assert!(visit(&bots, Method::HEAD, PREVIEWERS[0]));
    }

    /// Each pattern taken out is one of the list's (a renamed entry upstream would
    /// otherwise silently make its library a bot again).
    #[test]
    fn every_pattern_taken_out_was_in_the_list() {
        let full = isbot::Bots::default();
        let samples = [
            "curl/8.5.0",
            "java/17.0.2",
            "php/8.2",
            "php-curl-class/9.0",
            "postmanruntime/7.36",
            "lua-resty-http/0.17",
            "ahc/2.1",
            "python/3.11 aiohttp/3.9",
            "axios/1.6.0",
            "go-http-client/1.1",
            "guzzlehttp/7",
            "http_get",
            "apache-httpclient/4.5",
            "httpurlconnection",
            "python-httpx/0.27",
            "libwww-perl/6.72",
            "node-fetch/1.0",
            "okhttp/4.12.0",
            "pcore-http",
            "pycurl/7.45",
            "python-requests/2.31.0",
            "python-urllib/3.11",
            "wget/1.21",
        ];
        assert_eq!(samples.len(), NOT_BOTS.len());
        let ours = Bots::new(false);
        for ua in samples {
            assert!(full.is_bot(ua), "isbot no longer lists {ua}");
            assert!(!visit(&ours, Method::GET, ua), "{ua}");
        }
    }
}
