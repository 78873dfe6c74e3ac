//! The HTTP contract, end to end over real HTTP on a real socket, through
//! the service's own start and serve path, on every backend: one module
//! per resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod analytics;
mod events;
mod export;
mod import;
mod keys;
mod operations;
mod passwords;
mod policies;
mod qr;
mod redirect;
mod requests;
mod rules;
mod urls;
mod users;

every_backend!(
    analytics: [
        analytics_count_clicks_by_time_source_and_visitor,
        analytics_ranges_are_checked,
    ],
    events: [
        events_api,
        clients_cannot_forge_redirect_events,
    ],
    export: [
        links_export_as_csv_with_their_policy_and_never_a_password,
        events_export_every_row_across_pages,
    ],
    import: [
        links_import_from_other_shorteners_idempotently,
        bad_imports_are_refused_with_the_reason,
    ],
    keys: [
        keys_are_shown_once_and_kept_only_as_a_hash,
        a_user_key_sees_and_changes_only_its_user,
        read_only_keys_change_nothing,
        keys_rotate_and_revoke_without_downtime,
        expired_keys_and_deleted_users_keys_are_refused,
        events_say_who_wrote_them,
    ],
    operations: [
        health_reports_database_and_cache,
        openapi_document_lists_every_route,
        metrics_are_exported,
        made_up_methods_fold_into_one_label,
        impossible_codes_are_not_looked_up,
    ],
    passwords: [
        a_protected_link_redirects_only_with_its_password,
        wrong_passwords_are_limited_per_link_and_client,
        passwords_are_validated_and_never_shown,
        a_protected_link_stays_protected_through_the_shared_cache,
    ],
    policies: [
        each_redirect_type_answers_with_its_status_and_is_never_cached,
        expired_links_answer_410_as_json_or_a_page_or_go_to_their_fallback,
        a_capped_link_redirects_exactly_max_visits_times,
        policy_fields_are_validated,
        a_visit_cap_holds_exactly_across_two_replicas,
    ],
    qr: [
        a_links_qr_code_holds_its_short_url,
        qr_codes_need_a_key_that_may_see_the_link,
    ],
    redirect: [
        redirect_records_an_event_visible_at_once,
        inactive_and_unknown_codes_do_not_redirect_or_record,
        update_reaches_the_redirect_at_once,
        bots_and_head_requests_are_recorded_as_bot_visits_not_clicks,
        counted_bots_are_clicks,
        concurrent_redirects_to_one_link_are_each_counted_once,
    ],
    rules: [
        rules_choose_the_target_by_device_language_and_query,
        a_link_forwards_its_query_only_when_asked,
        bad_rules_are_refused_with_the_reason_and_change_nothing,
        rules_hold_through_the_shared_cache,
    ],
    requests: [
        bodies_that_are_not_objects_are_400,
        wrong_types_name_the_field,
        unknown_references_are_404,
        errors_are_always_json,
        api_key_mode_guards_management_endpoints,
        request_ids_are_echoed_or_assigned_uniquely,
        slow_headers_are_cut_off,
    ],
    urls: [
        urls_crud_and_events,
        same_url_twice_gives_two_codes,
        deleting_a_url_is_soft_and_idempotent,
        url_validation_rules,
        custom_short_codes,
        shorten_quick_path,
        stats,
        pagination_and_filters,
        hostile_targets_are_refused,
    ],
    users: [
        users_crud,
        user_validation,
        duplicate_email_is_conflict_case_insensitively,
        usernames_may_repeat,
        empty_user_update_is_refused,
        deleting_a_user_deactivates_their_urls_and_frees_the_email,
        bulk_user_import,
        bulk_import_reports_are_bounded,
    ],
);
