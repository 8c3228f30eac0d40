"""matchcore.bench"""
