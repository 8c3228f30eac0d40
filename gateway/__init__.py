"""matchcore.gateway"""
