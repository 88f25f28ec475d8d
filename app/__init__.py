"""PRM Studio application: settings, database, CLI and the Gradio dashboard."""
