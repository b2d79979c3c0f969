"""eprpipe-bars: an example eprpipe plugin with one dataset and one architecture."""
