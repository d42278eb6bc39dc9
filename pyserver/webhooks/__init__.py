"""Webhooks: which app events become deliveries (`dispatcher`), their exact JSON and
signature (`payloads`), and their reliable delivery over HTTP (`sender`)."""
