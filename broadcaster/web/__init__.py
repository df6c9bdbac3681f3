"""Front ends over HTTP: the JSON API, the live event feed, the console assets."""
