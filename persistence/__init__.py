"""matchcore.persistence"""
