output "viewers_url" {
  description = "The internal load balancer's name; give it the certificate's host name in the company DNS."
  value       = "https://${aws_lb.viewers.dns_name}/"
}

output "archive_bucket" {
  value = aws_s3_bucket.archive.bucket
}

output "web_group" {
  value = aws_autoscaling_group.web.name
}
