"""Opens and clicks (issue 18): signed redirect links and an open pixel, machine hits told
apart from people's, figures per campaign / step and per link, and the data's uses
(audience filters, resend to non-openers, sequences started by a click)."""
