from eventsvc import create_app

app = create_app()
