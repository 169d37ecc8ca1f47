"""The management API (`/api/v1`): tenants, users, plans, subscriptions, feature flags, and
read access to conversations, messages and AI results. Bearer JWT; isolation by the database."""
