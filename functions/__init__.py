"""The serverless functions; each folder deploys on its own with the shared package."""
