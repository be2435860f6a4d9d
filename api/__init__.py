"""The JSON API's plumbing (auth: who is asking and what they may do, api_view, JSON bodies) and its OpenAPI
document (openapi). The endpoints themselves live in the apps whose models they serve (apps.api, environments.api)."""
