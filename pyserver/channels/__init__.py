"""One app at run time on this node: its behaviour (`app`), the local fan-out table
(`registry`) and the observers that webhooks and the console hang on (`observer`).
Floor 3: above the cluster engines, below webhooks, the API and the server."""
