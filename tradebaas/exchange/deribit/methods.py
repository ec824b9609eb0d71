"""Every JSON-RPC method Deribit's API has (the paths of its OpenAPI spec v2.1.1, shared/reference), by name.

Why a list: the simulator answers a method it does not implement with Deribit's own error for an unsupported
request (10033 ``not_implemented``: "method is not implemented yet", which ccxt maps to ``NotSupported``) when
Deribit has that method, and with -32601 ``Method not found`` only when Deribit has no such method either. A
client then learns the same thing it would learn from the real exchange: "this exists, but not here".
"""

from __future__ import annotations

PUBLIC: frozenset[str] = frozenset({
    "public/auth", "public/disable_heartbeat", "public/exchange_token", "public/fork_token",
    "public/get_announcements", "public/get_apr_history", "public/get_block_rfq_trades",
    "public/get_book_summary_by_currency", "public/get_book_summary_by_instrument", "public/get_combo_details",
    "public/get_combo_ids", "public/get_combos", "public/get_contract_size", "public/get_currencies",
    "public/get_delivery_prices", "public/get_expirations", "public/get_funding_chart_data",
    "public/get_funding_rate_history", "public/get_funding_rate_value", "public/get_historical_volatility",
    "public/get_index_chart_data", "public/get_index_price", "public/get_index_price_names",
    "public/get_instrument", "public/get_instruments", "public/get_last_settlements_by_currency",
    "public/get_last_settlements_by_instrument", "public/get_last_trades_by_currency",
    "public/get_last_trades_by_currency_and_time", "public/get_last_trades_by_instrument",
    "public/get_last_trades_by_instrument_and_time", "public/get_mark_price_history", "public/get_order_book",
    "public/get_order_book_by_instrument_id", "public/get_supported_index_names", "public/get_time",
    "public/get_trade_volumes", "public/get_tradingview_chart_data", "public/get_volatility_index_data",
    "public/hello", "public/set_heartbeat", "public/status", "public/subscribe", "public/test",
    "public/ticker", "public/unsubscribe", "public/unsubscribe_all",
})

PRIVATE: frozenset[str] = frozenset({
    "private/accept_block_rfq", "private/add_block_rfq_quote", "private/add_to_address_book",
    "private/approve_block_trade", "private/buy", "private/cancel", "private/cancel_all",
    "private/cancel_all_block_rfq_quotes", "private/cancel_all_by_currency",
    "private/cancel_all_by_currency_pair", "private/cancel_all_by_instrument",
    "private/cancel_all_by_kind_or_type", "private/cancel_block_rfq", "private/cancel_block_rfq_quote",
    "private/cancel_block_rfq_trigger", "private/cancel_by_label", "private/cancel_quotes",
    "private/cancel_transfer_by_id", "private/cancel_withdrawal", "private/change_api_key_name",
    "private/change_margin_model", "private/change_scope_in_api_key", "private/change_subaccount_name",
    "private/close_position", "private/create_api_key", "private/create_block_rfq", "private/create_combo",
    "private/create_deposit_address", "private/create_subaccount", "private/delete_address_beneficiary",
    "private/disable_api_key", "private/disable_cancel_on_disconnect", "private/edit", "private/edit_api_key",
    "private/edit_block_rfq_quote", "private/edit_by_label", "private/enable_affiliate_program",
    "private/enable_api_key", "private/enable_cancel_on_disconnect", "private/execute_block_trade",
    "private/get_access_log", "private/get_account_summaries", "private/get_account_summary",
    "private/get_address_beneficiary", "private/get_address_book", "private/get_affiliate_program_info",
    "private/get_block_rfq_makers", "private/get_block_rfq_quotes", "private/get_block_rfq_user_info",
    "private/get_block_rfqs", "private/get_block_trade", "private/get_block_trade_requests",
    "private/get_block_trades", "private/get_broker_trade_requests", "private/get_broker_trades",
    "private/get_cancel_on_disconnect", "private/get_current_deposit_address", "private/get_deposits",
    "private/get_email_language", "private/get_leg_prices", "private/get_margins", "private/get_mmp_config",
    "private/get_mmp_status", "private/get_new_announcements", "private/get_open_orders",
    "private/get_open_orders_by_currency", "private/get_open_orders_by_instrument",
    "private/get_open_orders_by_label", "private/get_order_history_by_currency",
    "private/get_order_history_by_instrument", "private/get_order_margin_by_ids", "private/get_order_state",
    "private/get_order_state_by_label", "private/get_position", "private/get_positions",
    "private/get_reward_eligibility", "private/get_settlement_history_by_currency",
    "private/get_settlement_history_by_instrument", "private/get_subaccounts",
    "private/get_subaccounts_details", "private/get_transaction_log", "private/get_transfers",
    "private/get_trigger_order_history", "private/get_user_locks", "private/get_user_trades_by_currency",
    "private/get_user_trades_by_currency_and_time", "private/get_user_trades_by_instrument",
    "private/get_user_trades_by_instrument_and_time", "private/get_user_trades_by_order",
    "private/get_withdrawals", "private/invalidate_block_trade_signature",
    "private/list_address_beneficiaries", "private/list_api_keys", "private/list_custody_accounts",
    "private/logout", "private/mass_quote", "private/move_positions", "private/pme/simulate",
    "private/reject_block_trade", "private/remove_api_key", "private/remove_from_address_book",
    "private/remove_subaccount", "private/reset_api_key", "private/reset_mmp",
    "private/save_address_beneficiary", "private/sell", "private/set_announcement_as_read",
    "private/set_clearance_originator", "private/set_disabled_trading_products",
    "private/set_email_for_subaccount", "private/set_email_language", "private/set_mmp_config",
    "private/set_self_trading_config", "private/simulate_block_trade", "private/simulate_portfolio",
    "private/submit_transfer_between_subaccounts", "private/submit_transfer_to_subaccount",
    "private/submit_transfer_to_user", "private/subscribe", "private/toggle_notifications_from_subaccount",
    "private/toggle_subaccount_login", "private/unsubscribe", "private/unsubscribe_all",
    "private/update_in_address_book", "private/verify_block_trade", "private/withdraw",
})

#: Every method name, with its scope (``public/...``, ``private/...``).
ALL: frozenset[str] = PUBLIC | PRIVATE


def is_deribit_method(method: str) -> bool:
    """``public/ticker``, ``private/buy``: a method of Deribit's API."""
    return method in ALL
